"""The web UI's session cookie: its name and its settings (configured by the composition root)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

COOKIE_NAME = "mlservice_auth"


@dataclass
class CookieSettings:
    # `secure` follows the setting at startup (see configure_auth): behind TLS it must be on.
    secure: bool = False
    max_age: int = 24 * 3600


cookie_settings = CookieSettings()


def configure_auth(*, cookie_secure: bool, lifetime_seconds: int) -> None:
    """The session cookie's ``Secure`` flag and lifetime, from the settings (one per process)."""
    cookie_settings.secure = cookie_secure
    cookie_settings.max_age = lifetime_seconds


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=cookie_settings.max_age,
        httponly=True,
        samesite="lax",
        secure=cookie_settings.secure,
        path="/",
    )


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(
        COOKIE_NAME, httponly=True, samesite="lax", secure=cookie_settings.secure, path="/"
    )
