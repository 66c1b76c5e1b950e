"""Puts the edge (:mod:`mlservice.edge`) and the optional Host and CORS checks on the app."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from mlservice.edge import Edge
from mlservice.observability.http import RequestLog
from mlservice.security.forwarded import TrustedProxies
from mlservice.security.headers import SecurityHeaders
from mlservice.security.uploads import FORM_OVERHEAD_BYTES
from mlservice.web.csrf import CSRF_REFUSAL, api_csrf_refused

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mlservice.observability.metrics import ServiceMetrics
    from mlservice.settings import Settings


def origin(url: str) -> str:
    """scheme://host[:port] of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


CORS_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID"]
CORS_EXPOSED = [
    "Retry-After",
    "X-Request-ID",
    "Location",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
]


def install_edge(app: FastAPI, settings: Settings, metrics: ServiceMetrics) -> None:
    """The edge outermost (every answer below, refusals included, carries the request id and the
    security headers, and is counted), then the Host check and CORS when configured. Rate limits
    are route dependencies (:mod:`mlservice.security.limits`): they key on a login's e-mail or
    a token's user."""
    # add_middleware puts each one outside those added before: added innermost first.
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
    app.add_middleware(
        Edge,
        trusted=TrustedProxies(settings.forwarded_allow_ips),
        request_log=RequestLog(metrics),
        headers=SecurityHeaders(
            hsts_seconds=settings.hsts_seconds,
            form_targets=sorted({origin(p.issuer) for p in settings.oidc.values()}),
        ),
        max_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD_BYTES,
        csrf_refused=api_csrf_refused,
        csrf_refusal=CSRF_REFUSAL,
    )
