"""Request body limits, answered in the error shape before any route reads the body: its size
(413, whether Content-Length is sent or not) and, for JSON, its nesting depth (422).
"""

import json
import re

import numpy as np

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_body
from shared.errors import RequestTooLarge
from shared.settings import Settings

UPLOAD_PREFIXES = ("/v1/datasets",)
MAX_JSON_DEPTH = 32  # a job spec nests 4 deep (a sweep's grid of transition matrices, 5)
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if chr(b) not in "[]{}")
_STEP = np.array([1 if chr(b) in "[{" else -1 for b in range(256)], np.int8)  # +1 opens, -1 closes


def body_limit(settings: Settings, path: str) -> int:
    return settings.max_upload_bytes if path.startswith(UPLOAD_PREFIXES) else settings.max_request_bytes


class BodySizeLimit:
    """Reads the limits from `app.state.settings` (set at start)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = body_limit(scope["app"].state.settings, scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(limit, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise RequestTooLarge(_message(limit))  # answered by the app's error handler
            return message

        await self.app(scope, counting_receive, send)


class JsonDepthLimit:
    """Reads a JSON body whole (413 beyond settings.max_request_bytes, on every path) and refuses
    it with 422 when its arrays and objects nest deeper than MAX_JSON_DEPTH; otherwise hands it
    on unchanged. Installed inside BodySizeLimit.

    Python's JSON parser, pydantic and every recursive walk of the value after them would
    otherwise run out of stack on a body nested a few hundred deep (a 500), and a deep value
    costs more to copy and check than its size suggests."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        limit = scope["app"].state.settings.max_request_bytes
        chunks, size, more = [], 0, True
        while more:
            try:
                message = await receive()
            except RequestTooLarge:  # BodySizeLimit's count, around this one
                size = limit + 1
            else:
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
            if size > limit:
                await _answer(send, 413, RequestTooLarge.code, _message(limit))
                return
        body = b"".join(chunks)
        if json_depth(body) > MAX_JSON_DEPTH:
            await _answer(send, 422, "json_too_deep", f"the JSON body nests arrays and objects more than "
                                                      f"{MAX_JSON_DEPTH} deep; a job spec or a sweep needs 5 at most")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, strings left out. Malformed text
    gets a number too (the parser refuses it later)."""
    brackets = np.frombuffer(_JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS), np.uint8)
    return int(np.cumsum(_STEP[brackets], dtype=np.int32).max(initial=0))


def _is_json(scope: Scope) -> bool:
    """FastAPI parses a body as JSON when its type is application/json or +json, or not given."""
    if scope["method"] in ("GET", "HEAD", "OPTIONS"):
        return False
    content_type = dict(scope["headers"]).get(b"content-type", b"").split(b";")[0].strip().lower()
    return content_type in (b"", b"application/json") or (
        content_type.startswith(b"application/") and content_type.endswith(b"+json"))


def _message(limit: int) -> str:
    return f"the request body exceeds {limit} bytes; send less"


async def _refuse(limit: int, send: Send) -> None:
    await _answer(send, 413, RequestTooLarge.code, _message(limit))


async def _answer(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
