"""Hooking the web UI into the app: static files, page routes, HTML answers for page errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlservice.errors import AppError, describe_error, error_json
from mlservice.web import admin, auth_pages, oidc_pages, pages, wallet_pages
from mlservice.web.deps import viewer_from_cookie
from mlservice.web.render import STATIC_DIR, LoginRequired, login_redirect, page

# Paths that are the JSON API or the machine endpoints: their errors stay JSON.
_NOT_PAGES = (
    "/api/",
    "/v1/",  # the Replicate-compatible API
    "/health",
    "/ready",
    "/metrics",
    "/static/",
    "/docs",  # /docs, its assets (/docs-assets) and its OAuth2 redirect
    "/redoc",
    "/openapi.json",
)

_TITLES = {
    400: "Bad request",
    401: "Please log in",
    402: "Not enough credits",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible",
    413: "Too large",
    429: "Slow down",
}
_MESSAGES = {
    404: "There is no page at this address, or it is not yours to see.",
    405: "This page cannot be used this way.",
}


def is_page(request: Request) -> bool:
    return not request.url.path.startswith(_NOT_PAGES)


async def error_page(request: Request, status_code: int, message: str) -> Response:
    user, wallet = await viewer_from_cookie(request)
    title = _TITLES.get(status_code, "Something is wrong")
    return page(
        request, "error.html", user=user, wallet=wallet, status_code=status_code, title=title, message=message
    )


def install_web(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(auth_pages.router)
    app.include_router(oidc_pages.router)
    app.include_router(pages.router)
    app.include_router(wallet_pages.router)
    app.include_router(admin.router)

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, exc: LoginRequired) -> Response:
        return login_redirect(exc.next_url)

    async def error(request: Request, exc: Exception) -> Response:
        info = describe_error(exc)
        if not is_page(request):
            return error_json(info)
        if isinstance(exc, RequestValidationError):
            # A page's own form errors are shown on the page; this is a query or path value.
            return await error_page(request, 400, "The address or the form has a value this page cannot use.")
        message = info.message
        if isinstance(exc, StarletteHTTPException):
            # Starlette's own answers (no route for the path, a wrong method) in the UI's words.
            message = _MESSAGES.get(exc.status_code) or (exc.detail if isinstance(exc.detail, str) else "")
        response = await error_page(request, info.status_code, message)
        response.headers.update(info.headers)
        return response

    for kind in (AppError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(kind, error)
