"""A request body bound for routes that let FastAPI parse their body (item metadata): FastAPI
reads a whole body before validating it, so without this a client could make a replica hold
any amount of memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stream.api.errors import error_response


class BodyLimit:
    """ASGI middleware: under `prefix`, a body declared larger than `limit` bytes is answered
    413 before anything reads it; one that streams past `limit` without a declared length is
    cut off (the route sees the client leave)."""

    def __init__(self, app: ASGIApp, limit: int, prefix: str) -> None:
        self.app, self.limit, self.prefix = app, limit, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            answer = error_response(413, f"body exceeds {self.limit} bytes")
            await answer(scope, receive, send)
            return
        received = 0

        async def bounded() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, bounded, send)
