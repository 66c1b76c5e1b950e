"""What every HTTP request passes through before a route, in one pure ASGI layer.

In order: the client's address and scheme from a trusted proxy's headers
(:mod:`mlservice.security.forwarded`); a request id, bound to everything logged meanwhile
(:mod:`mlservice.observability.context`); the body limit, an announced length refused before a
byte is read and a streamed body counted as it arrives (:mod:`mlservice.security.uploads`); the
CSRF check of cookie-authenticated API writes (:mod:`mlservice.web.csrf`). On the way out, the
request id and the security headers (:mod:`mlservice.security.headers`) go on every answer,
refusals included, a rate-limited route's answer gets its ``RateLimit-*`` headers
(:mod:`mlservice.security.ratelimit`), and the request is counted and logged
(:mod:`mlservice.observability.http`).

One layer, because each ASGI middleware is a call and a wrapped ``send`` per message for every
request, whatever it does; the profile of the API under load showed eight of them nested.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlservice.observability.context import RequestContext, new_request_id, request_scope, valid_request_id
from mlservice.observability.http import REQUEST_ID_HEADER, RequestLog
from mlservice.security.forwarded import TrustedProxies, rewrite_forwarded
from mlservice.security.headers import SecurityHeaders
from mlservice.security.ratelimit import add_quota_headers
from mlservice.security.uploads import PayloadTooLarge, announced_length, too_large_response

_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()


class Edge:
    """The layer; each part is off when not configured (``trusted`` empty, ``max_body_bytes``
    None, no ``csrf_refusal``), so a test can use one alone."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted: TrustedProxies | None = None,
        request_log: RequestLog | None = None,
        headers: SecurityHeaders | None = None,
        max_body_bytes: int | None = None,
        csrf_refused: Callable[[Scope], bool] | None = None,
        csrf_refusal: dict[str, object] | None = None,
    ) -> None:
        self.app = app
        self.trusted = trusted
        self.request_log = request_log
        self.headers = headers
        self.max_body_bytes = max_body_bytes
        self.csrf_refused = csrf_refused
        self.csrf_body = json.dumps(csrf_refusal or {}, separators=(",", ":")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted is not None:
            rewrite_forwarded(scope, self.trusted)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == _REQUEST_ID), None)
        request_id = valid_request_id(given.decode("latin-1") if given else None) or new_request_id()
        context = RequestContext(request_id, self.request_log.metrics if self.request_log else None)
        status = 500  # what the client gets if the app raises before answering
        started = False
        began = time.perf_counter()
        headers = self.headers

        async def send_out(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
                out: list[tuple[bytes, bytes]] = [
                    item for item in message.get("headers", ()) if item[0].lower() != _REQUEST_ID
                ]
                out.append((_REQUEST_ID, request_id.encode()))
                if headers is not None:
                    headers.add(scope, out)
                add_quota_headers(scope, out)
                message = {**message, "headers": out}
            await send(message)

        with request_scope(context):
            try:
                await self._guarded(scope, receive, send_out, lambda: started)
            finally:
                if self.request_log is not None:
                    self.request_log.record(scope, context, status, time.perf_counter() - began)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, started: Callable[[], bool]) -> None:
        limit = self.max_body_bytes
        if limit is not None:
            announced = announced_length(scope)
            if announced is not None and announced > limit:
                await self._too_large(send, limit)
                return
        if self.csrf_refused is not None and self.csrf_refused(scope):
            await _json(send, 403, self.csrf_body)
            return
        if limit is None:
            await self.app(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            if received > limit:
                raise PayloadTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except PayloadTooLarge:
            if started():
                raise
            await self._too_large(send, limit)
        except ExceptionGroup as group:
            # A task group in the app (streaming, a background reader) wraps the exception.
            matched, rest = group.split(PayloadTooLarge)
            if matched is None or rest is not None or started():
                raise
            await self._too_large(send, limit)

    @staticmethod
    async def _too_large(send: Send, limit: int) -> None:
        start, body = too_large_response(limit)
        await send(start)
        await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
