"""The API docs in a browser with no network: every script and style comes from the app, the CSP
blocks nothing, and the operations are there to read."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from tests.fixtures.live_server import LiveServer
from tests.web.conftest import BrowserConsole, require_playwright

require_playwright()

from playwright.sync_api import Page, Route, expect  # noqa: E402


def offline(page: Page, origin: str) -> list[str]:
    """Refuse every request that leaves ``origin``; the list of those refused."""
    refused: list[str] = []

    def route(route: Route) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if url.startswith(("data:", "blob:")) or f"{parts.scheme}://{parts.netloc}" == origin:
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", route)
    return refused


def test_swagger_ui_and_redoc_work_offline(
    live_server: LiveServer, browser_new_page: Callable[..., Page], browser_console: BrowserConsole
) -> None:
    # ReDoc's "API docs by Redocly" footer names its logo by a CDN address; the policy blocks it
    # (the one thing these pages would fetch from elsewhere, and not needed to read them).
    browser_console.allow(r"cdn\.redoc\.ly/redoc/logo-mini\.svg")
    origin = live_server.url.rstrip("/")
    page = browser_new_page(live_server.url)
    refused = offline(page, origin)

    page.goto("/docs")
    # Swagger UI rendered the document: the operations, grouped by tag.
    expect(page.locator(".opblock").first).to_be_visible()
    expect(page.get_by_text("/api/jobs/{job_id}", exact=True).first).to_be_visible()
    assert page.locator(".opblock").count() > 20

    page.goto("/redoc")
    expect(page.get_by_text("Submit a job", exact=False).first).to_be_visible()

    # Nothing was fetched from elsewhere (a CDN would have been refused, and the page left blank);
    # a CSP violation would be a console error, which fails the test too.
    assert refused == []
