"""The request body size limit: 413 in the error shape, whether Content-Length is sent or not."""

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import RequestTooLarge, error_body
from shared.settings import Settings

UPLOAD_PREFIXES = ("/v1/datasets",)


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


def _message(limit: int) -> str:
    return f"the request body exceeds {limit} bytes; send less"


async def _refuse(limit: int, send: Send) -> None:
    body = json.dumps(error_body(RequestTooLarge.code, _message(limit))).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]})
    await send({"type": "http.response.body", "body": body})
