"""The API's documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with every asset
served by the app itself: they work offline and load nothing from a CDN.

The scripts and styles come from the pinned ``fastapi-offline`` package (its ``static`` folder);
FastAPI renders the pages. Each page sends a Content-Security-Policy of its own that allows this
origin and exactly the inline bootstrap script of that page (by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_URL = "/docs-assets"
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
PATHS = (ASSETS_URL, DOCS_URL, REDOC_URL)

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


class _Page:
    """A rendered page and its policy: this origin and the page's own inline scripts, nothing else.

    A fresh response per request: middleware adds headers to a response's header list.
    """

    def __init__(self, rendered: HTMLResponse, *, workers: bool = False) -> None:
        self.html = bytes(rendered.body).decode()
        hashes = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
            for script in _INLINE_SCRIPT.findall(self.html)
        )
        self.policy = (
            f"default-src 'self'; script-src 'self' {hashes}; "
            # Both UIs set styles from their scripts.
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            + ("worker-src 'self' blob:; " if workers else "")
            + "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
        )

    def response(self) -> HTMLResponse:
        return HTMLResponse(self.html, headers={"Content-Security-Policy": self.policy})


def install_docs(app: FastAPI) -> None:
    """``/docs``, its OAuth2 redirect and ``/redoc`` on ``app`` (made with ``docs_url=None`` and
    ``redoc_url=None``), over the OpenAPI document at ``app.openapi_url``."""
    assets = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(assets)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    swagger = _Page(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            oauth2_redirect_url=OAUTH2_REDIRECT_URL,
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        )
    )
    redirect = _Page(get_swagger_ui_oauth2_redirect_html())
    redoc = _Page(
        get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} — API",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        ),
        workers=True,
    )

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return swagger.response()

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return redirect.response()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc_ui() -> HTMLResponse:
        return redoc.response()
