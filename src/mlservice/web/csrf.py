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
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

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


class ApiCsrfMiddleware:
    """Pure ASGI: an unsafe request to ``/api/*`` that carries the session cookie and no
    ``Authorization`` header must echo the CSRF cookie in ``X-CSRF-Token``, or it is refused 403.

    A browser never adds an ``Authorization`` header on its own (and another site cannot make it
    add one without a CORS preflight we do not grant), so such requests need no check; it does send
    the cookie, so requests relying on it must prove they could read this site's pages.
    Only headers are read: the body passes through untouched.
    """

    def __init__(self, app: ASGIApp, *, api_prefix: str = "/api/") -> None:
        self.app = app
        self.api_prefix = api_prefix
        # Login, registration and logout make or drop the session: there is none to ride on yet.
        self.exempt_prefix = f"{api_prefix}auth/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._refused(scope):
            response = JSONResponse(
                error_body(
                    "csrf_failed",
                    "Requests authenticated by the session cookie must send the X-CSRF-Token header "
                    "with the page's CSRF token; reload the page and try again.",
                ),
                status_code=403,
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refused(self, scope: Scope) -> bool:
        path: str = scope["path"]
        if (
            scope["method"] not in _UNSAFE_METHODS
            or not path.startswith(self.api_prefix)
            or path.startswith(self.exempt_prefix)
        ):
            return False
        connection = HTTPConnection(scope)
        if connection.headers.get("authorization", "").strip() or COOKIE_NAME not in connection.cookies:
            return False  # a bearer client, or no session at all (the route answers 401 itself)
        return not tokens_match(connection.cookies.get(CSRF_COOKIE), connection.headers.get(CSRF_HEADER))
