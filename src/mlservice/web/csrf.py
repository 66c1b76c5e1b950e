"""CSRF protection for the cookie session (double submit).

The browser holds a random token in the ``mlservice_csrf`` cookie; every form carries it in a hidden
``csrf_token`` field and every script call to the API in the ``X-CSRF-Token`` header. Another site can
make the browser send the cookie (when SameSite allows it) but cannot read it, so it cannot echo it.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request, Response
from starlette.requests import HTTPConnection
from starlette.types import Scope

from mlservice.errors import Forbidden, error_body
from mlservice.users.transports import COOKIE_NAME

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


def tokens_match(expected: str | None, submitted: str | None) -> bool:
    return bool(expected and submitted and hmac.compare_digest(expected.encode(), submitted.encode()))


def check_csrf(request: Request, submitted: str | None) -> None:
    if not tokens_match(request.cookies.get(CSRF_COOKIE), submitted):
        raise Forbidden(
            "The form expired or came from another site; reload the page and try again.", code="csrf_failed"
        )


# -- the JSON API, when the browser's session cookie is what authenticates it -----------------------

_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# Login, registration and logout make or drop the session: there is none to ride on yet.
_API_PREFIX, _EXEMPT_PREFIX = "/api/", "/api/auth/"
CSRF_REFUSAL = error_body(
    "csrf_failed",
    "Requests authenticated by the session cookie must send the X-CSRF-Token header "
    "with the page's CSRF token; reload the page and try again.",
)


def api_csrf_refused(scope: Scope) -> bool:
    """Whether to refuse (403 ``csrf_failed``) an unsafe request to ``/api/*`` that carries the
    session cookie and no ``Authorization`` header: it must echo the CSRF cookie in ``X-CSRF-Token``.

    A browser never adds an ``Authorization`` header on its own (and another site cannot make it
    add one without a CORS preflight we do not grant), so such requests need no check; it does send
    the cookie, so requests relying on it must prove they could read this site's pages.
    Only headers are read: the body passes through untouched.
    """
    path: str = scope["path"]
    if (
        scope["method"] not in _UNSAFE_METHODS
        or not path.startswith(_API_PREFIX)
        or path.startswith(_EXEMPT_PREFIX)
    ):
        return False
    connection = HTTPConnection(scope)
    if connection.headers.get("authorization", "").strip() or COOKIE_NAME not in connection.cookies:
        return False  # a bearer client, or no session at all (the route answers 401 itself)
    return not tokens_match(connection.cookies.get(CSRF_COOKIE), connection.headers.get(CSRF_HEADER))
