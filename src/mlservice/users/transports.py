"""Where a request carries its token: the ``Authorization`` header (API clients) or the session
cookie (the web UI), and the cookie's settings, configured by the composition root."""

from __future__ import annotations

from fastapi_users.authentication import BearerTransport, CookieTransport

COOKIE_NAME = "mlservice_auth"

bearer_transport = BearerTransport(tokenUrl="/api/auth/jwt/login")
# `secure` follows the setting at startup (see configure_auth): behind TLS it must be on.
cookie_transport = CookieTransport(
    cookie_name=COOKIE_NAME, cookie_httponly=True, cookie_samesite="lax", cookie_secure=False
)


def configure_auth(*, cookie_secure: bool, lifetime_seconds: int) -> None:
    """The session cookie's ``Secure`` flag and lifetime, from the settings (one per process)."""
    cookie_transport.cookie_secure = cookie_secure
    cookie_transport.cookie_max_age = lifetime_seconds
