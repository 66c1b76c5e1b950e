"""Hooking the web UI into the app: static files, page routes, HTML answers for page errors."""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

from mlservice.errors import AppError
from mlservice.web import auth_pages, pages
from mlservice.web.render import STATIC_DIR, LoginRequired, login_redirect, page

# Paths that are the JSON API or the machine endpoints: their errors stay JSON.
_NOT_PAGES = ("/api/", "/health", "/ready", "/metrics", "/static/", "/docs", "/redoc", "/openapi.json")

_TITLES = {401: "Please log in", 403: "Not allowed", 404: "Not found", 409: "Not possible", 429: "Slow down"}


def is_page(request: Request) -> bool:
    return not request.url.path.startswith(_NOT_PAGES)


def install_web(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(auth_pages.router)
    app.include_router(pages.router)

    @app.exception_handler(LoginRequired)
    async def login_required(_: Request, exc: LoginRequired) -> Response:
        return login_redirect(exc.next_url)

    json_handler = app.exception_handlers[AppError]

    async def app_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, AppError)
        if not is_page(request):
            answer = json_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        title = _TITLES.get(exc.status_code, "Something is wrong")
        return page(
            request, "error.html", user=None, status_code=exc.status_code, title=title, message=exc.message
        )

    app.add_exception_handler(AppError, app_error)
