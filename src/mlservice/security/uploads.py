"""Request body limits enforced while the body arrives, never after buffering it.

A request that announces more than the limit in ``Content-Length`` is answered 413 before a byte
of its body is read. A chunked body, or one longer than it announced, is counted as the app reads
it: the read that crosses the limit raises :class:`PayloadTooLarge` and nothing more is read.
The exception is an ``HTTPException``, so FastAPI's body parsing lets it through to the error
handlers, which render ``{"error": {"code": "payload_too_large", ...}}``; if it escapes the app
before a response started, the edge sends the same answer itself.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.types import Scope

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


def announced_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses such framing before we see it
    return None


def too_large_response(max_bytes: int) -> tuple[dict[str, object], bytes]:
    """The 413 answer, as an ASGI response start and its body, for when it must be sent directly."""
    error = PayloadTooLarge(max_bytes)
    detail = error.detail
    assert isinstance(detail, dict)
    body = json.dumps(error_body(detail["code"], detail["reason"]), separators=(",", ":")).encode()
    start = {
        "type": "http.response.start",
        "status": 413,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, body
