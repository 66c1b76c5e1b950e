"""CSRF protection for the cookie session (double submit).

The browser holds a random token in the ``mlservice_csrf`` cookie; every form carries it in a hidden
``csrf_token`` field and every script call to the API in the ``X-CSRF-Token`` header. Another site can
make the browser send the cookie (when SameSite allows it) but cannot read it, so it cannot echo it.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request, Response

from mlservice.errors import Forbidden

CSRF_COOKIE = "mlservice_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


def csrf_token(request: Request) -> str:
    """The request's token: the cookie's, or a new one that :func:`set_csrf_cookie` will set."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) > 128:
        token = getattr(request.state, "new_csrf_token", None) or secrets.token_urlsafe(32)
        request.state.new_csrf_token = token
    return token


def set_csrf_cookie(request: Request, response: Response, *, secure: bool) -> None:
    new = getattr(request.state, "new_csrf_token", None)
    if new is not None:
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=secure, path="/")


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.cookies.get(CSRF_COOKIE)
    if not expected or not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise Forbidden(
            "The form expired or came from another site; reload the page and try again.", code="csrf_failed"
        )
