"""Puts the hardening middleware on the app, in the order it has to run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mlservice.security.forwarded import ForwardedHeadersMiddleware, TrustedProxies
from mlservice.security.headers import SecurityHeadersMiddleware
from mlservice.security.uploads import FORM_OVERHEAD_BYTES, RequestBodyLimitMiddleware

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlservice.settings import Settings

CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSED = ["Retry-After", "X-Request-ID", "Location"]


def install_security(app: FastAPI, settings: Settings) -> None:
    """Outermost first: the security headers (so every answer below carries them, refusals
    included), the Host check, CORS, and the body limit; :func:`install_proxy_headers` goes
    outside all middleware. Rate limits are route dependencies
    (:mod:`mlservice.security.ratelimit`): they key on a login's e-mail or a token's user."""
    # add_middleware puts each one outside those added before: added innermost first.
    app.add_middleware(RequestBodyLimitMiddleware, max_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=CORS_HEADERS,
            expose_headers=CORS_EXPOSED,
            max_age=600,
        )
    if "*" not in settings.trusted_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts)
    app.add_middleware(SecurityHeadersMiddleware, hsts_seconds=settings.hsts_seconds)


def install_proxy_headers(app: FastAPI, settings: Settings) -> None:
    """Add last, so it is the outermost middleware: all the others, request logs included, see
    the client's address and scheme rather than the proxy's."""
    app.add_middleware(ForwardedHeadersMiddleware, trusted=TrustedProxies(settings.forwarded_allow_ips))
