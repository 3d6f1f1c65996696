"""A scripted stand-in for the API behind httpx's MockTransport: the client's requests go
through real httpx request building and response handling, without a server."""

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from client.http import NoisyfitClient

Handler = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Routes `METHOD /path` to handlers; records every request; unknown routes answer 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[httpx.Request] = []

    def route(self, method: str, path: str, handler: Handler | dict | list) -> None:
        if not callable(handler):
            body = handler
            handler = lambda request: httpx.Response(200, json=body)  # noqa: E731
        self.routes[f"{method} {path}"] = handler

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        handler = self.routes.get(f"{request.method} {request.url.path}")
        if handler is None:
            return error(404, "not_found", f"no route {request.method} {request.url.path}")
        return handler(request)

    def client(self, api_key: str | None = "test-key") -> NoisyfitClient:
        return NoisyfitClient("http://api.test", api_key, timeout=5.0, transport=httpx.MockTransport(self))


def error(status: int, code: str, message: str, field: str | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "field": field}})


def event_stream(*chunks: bytes, fail: Exception | None = None) -> httpx.Response:
    """A text/event-stream answer sent in the given chunks, optionally breaking after them."""

    class Stream(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield from chunks
            if fail is not None:
                raise fail

    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Stream())


def sse(event: dict, id: str) -> bytes:
    return f"id: {id}\ndata: {json.dumps(event)}\n\n".encode()


def job(id: str = "j1", status: str = "queued", **fields) -> dict:
    spec = {"dataset": "mnist", "loss": "nce+rce", "noise": {"type": "symmetric", "rate": 0.4}, "epochs": 3, "seed": 0}
    return {"id": id, "status": status, "spec": spec, "progress": None, "result": None, "error": None, **fields}


@pytest.fixture
def fake_api() -> FakeApi:
    return FakeApi()
