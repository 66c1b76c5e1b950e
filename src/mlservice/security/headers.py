"""Security headers on every response (added by :mod:`mlservice.edge`)."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Scope

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


_HSTS = b"strict-transport-security"


class SecurityHeaders:
    """The headers a response does not set itself (a route may send a CSP of its own: the
    ``sandbox`` of file downloads, the API docs pages' (see :mod:`mlservice.docs`)). API answers
    are ``no-store`` unless they say otherwise: they carry tokens and account data that no shared
    cache should keep. HSTS only goes out on requests that came over TLS (``scope["scheme"]``, as
    the forwarded headers left it), since browsers ignore it over plain HTTP anyway."""

    def __init__(
        self, *, hsts_seconds: int = 0, api_prefix: str = "/api/", form_targets: Sequence[str] = ()
    ) -> None:
        self.hsts = f"max-age={hsts_seconds}; includeSubDomains".encode() if hsts_seconds else None
        self.api_prefix = api_prefix
        csp = DEFAULT_CSP
        if form_targets:
            # The OpenID providers' origins: logging out (a form) ends at their end-session page,
            # and browsers hold a form's redirects to form-action too.
            csp = csp.replace("form-action 'self'", " ".join(["form-action 'self'", *form_targets]))
        self.csp = csp.encode()

    def add(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
        """Add what ``headers`` (a response's, about to start) lacks, in place."""
        present = {name.lower() for name, _ in headers}
        headers.extend(item for item in _ALWAYS if item[0] not in present)
        if _CSP not in present:
            headers.append((_CSP, self.csp))
        if _CACHE_CONTROL not in present and scope["path"].startswith(self.api_prefix):
            headers.append((_CACHE_CONTROL, b"no-store"))
        if self.hsts is not None and _HSTS not in present and scope.get("scheme") == "https":
            headers.append((_HSTS, self.hsts))
