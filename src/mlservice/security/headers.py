"""Security headers on every response, as pure ASGI middleware (no per-request task or buffering)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The web UI serves every asset from this origin; nothing may frame it (clickjacking).
DEFAULT_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_ALWAYS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
)
_CSP = b"content-security-policy"
_CACHE_CONTROL = b"cache-control"


class SecurityHeadersMiddleware:
    """Adds the headers a response does not set itself (a route may send a CSP of its own: the
    ``sandbox`` of file downloads, the API docs pages' (see :mod:`mlservice.docs`)). API answers
    are ``no-store`` unless they say otherwise: they carry tokens and account data that no shared
    cache should keep. HSTS only goes out on requests that came over TLS (``scope["scheme"]``, as
    the forwarded headers middleware left it), since browsers ignore it over plain HTTP anyway."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts_seconds: int = 0,
        api_prefix: str = "/api/",
    ) -> None:
        self.app = app
        self.hsts = f"max-age={hsts_seconds}; includeSubDomains".encode() if hsts_seconds else None
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        csp = DEFAULT_CSP.encode()
        api = path.startswith(self.api_prefix)
        hsts = self.hsts if scope.get("scheme") == "https" else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in _ALWAYS if item[0] not in present)
                if _CSP not in present:
                    headers.append((_CSP, csp))
                if api and _CACHE_CONTROL not in present:
                    headers.append((_CACHE_CONTROL, b"no-store"))
                if hsts is not None and b"strict-transport-security" not in present:
                    headers.append((b"strict-transport-security", hsts))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
