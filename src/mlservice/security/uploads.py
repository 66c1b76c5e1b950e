"""Request body limits enforced while the body arrives, never after buffering it.

A request that announces more than the limit in ``Content-Length`` is answered 413 before a byte
of its body is read. A chunked body, or one longer than it announced, is counted as the app reads
it: the read that crosses the limit raises :class:`PayloadTooLarge` and nothing more is read.
The exception is an ``HTTPException``, so FastAPI's body parsing lets it through to the error
handlers, which render ``{"error": {"code": "payload_too_large", ...}}``; if it escapes the app
before a response started, this middleware sends the same answer itself.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlservice.errors import error_body

# The multipart framing and the form's other fields (`model`, `params`, a `text` of up to
# 10,000 characters) that travel with an upload of the maximum size.
FORM_OVERHEAD_BYTES = 256 * 1024


class PayloadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            413,
            detail={
                "code": "payload_too_large",
                "reason": f"The request body is larger than the limit of {limit} bytes.",
            },
            headers={"Connection": "close"},
        )


def _announced_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses such framing before we see it
    return None


class RequestBodyLimitMiddleware:
    """Pure ASGI: at most ``max_bytes`` of request body per HTTP request."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = _announced_length(scope)
        if announced is not None and announced > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            if received > self.max_bytes:
                raise PayloadTooLarge(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except PayloadTooLarge:
            if started:
                raise
            await self._refuse(send)
        except ExceptionGroup as group:
            # A task group in the app (streaming, a background reader) wraps the exception.
            matched, rest = group.split(PayloadTooLarge)
            if matched is None or rest is not None or started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        error = PayloadTooLarge(self.max_bytes)
        detail = error.detail
        assert isinstance(detail, dict)
        body = json.dumps(error_body(detail["code"], detail["reason"]), separators=(",", ":")).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
