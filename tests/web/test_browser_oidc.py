"""Single sign-on in headless Chromium: "Log in with Test ID" on our login page, the real
provider's (oidc-provider's) own login page, back signed in with the signup bonus, and logging out
through the provider's end-session page back to ours."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mlservice.app import create_app
from mlservice.migrations.runner import upgrade
from mlservice.settings import Settings
from tests.conftest import BACKENDS
from tests.fixtures.live_server import Address, free_port, serve_in_thread
from tests.fixtures.oidc_provider import OpenIdProvider, running_provider
from tests.fixtures.predictors import EchoText
from tests.web.conftest import BrowserConsole, require_playwright, scratch_pg_url

require_playwright()

from playwright.sync_api import Page, expect  # noqa: E402


def migrated(url: str) -> None:
    # Playwright's sync API keeps an event loop on this thread: migrate from another one.
    failure: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url)
        except BaseException as exc:  # re-raised below
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


@pytest.fixture(params=BACKENDS)
def site(
    request: pytest.FixtureRequest, tmp_path: Path, model_cache: Path
) -> Iterator[tuple[Address, OpenIdProvider]]:
    """The app under uvicorn on a fresh database of each backend, and a provider whose test
    client sends the browser back to it."""
    with scratch_database(request.param, tmp_path) as url:
        migrated(url)
        yield from _serving(url, tmp_path, model_cache)


@contextmanager
def scratch_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'mlservice.db'}"
        return
    with scratch_pg_url("mlservice_oidc") as url:
        yield url


def _serving(url: str, tmp_path: Path, model_cache: Path) -> Iterator[tuple[Address, OpenIdProvider]]:
    op_port = free_port()
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        var_dir=tmp_path / "var",
        database_url=url,
        model_cache_dir=model_cache,
        jwt_secret="test-secret-" + "x" * 40,
        workers=0,
        oidc_issuer=f"http://127.0.0.1:{op_port}",
        oidc_name="test",
        oidc_client_id="mlservice-tests",
        oidc_client_secret="tests-only-client-secret",
        oidc_scopes=["openid", "email", "profile", "groups"],
        oidc_display_name="Test ID",
    )
    app = create_app(settings, predictors={EchoText.slug: EchoText})
    with (
        serve_in_thread(app) as address,
        running_provider(
            tmp_path / "op",
            [f"{address.url}/auth/oidc/test/callback"],
            [f"{address.url}/login"],
            port=op_port,
        ) as provider,
    ):
        yield address, provider


def test_log_in_and_out_through_the_provider(
    site: tuple[Address, OpenIdProvider],
    browser_new_page: Callable[..., Page],
    browser_console: BrowserConsole,
    browser_screenshot: Callable[[Page, str], Any],
) -> None:
    address, provider = site
    # The provider's pages ask for a web font from the internet, which this machine cannot reach.
    browser_console.allow(r"fonts\.googleapis\.com|Failed to load resource")
    login = f"u{uuid.uuid4().hex[:10]}"
    provider.account(login, email=f"{login}@example.com", name="Ada Lovelace")
    page = browser_new_page(address.url)

    page.goto("/login")
    browser_screenshot(page, "oidc-login")
    page.get_by_role("link", name="Log in with Test ID").click()
    # The provider's own login page.
    expect(page).to_have_url(re.compile(re.escape(provider.issuer) + r"/interaction/"))
    page.get_by_placeholder("Enter any login").fill(login)
    page.get_by_placeholder("and password").fill("any password")
    page.get_by_role("button", name="Sign-in").click()

    # Back here, signed in, with the signup bonus.
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    assert page.url.startswith(address.url)
    expect(page.get_by_role("banner").get_by_role("link", name=re.compile(r"\b100 credits"))).to_be_visible()
    me = page.request.get("/api/users/me")
    assert me.ok
    assert me.json()["email"] == f"{login}@example.com"

    page.get_by_role("button", name="Log out").click()
    # The provider's end-session page asks; yes: back to our login page, logged out everywhere.
    expect(page).to_have_url(re.compile(re.escape(provider.issuer) + r"/session/end"))
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(f"{address.url}/login")
    expect(page.get_by_role("link", name="Log in with Test ID")).to_be_visible()
    assert page.request.get("/api/users/me").status == 401

    # The provider forgot the session too: logging in again asks for the login name again.
    page.get_by_role("link", name="Log in with Test ID").click()
    expect(page.get_by_placeholder("Enter any login")).to_be_visible()

    # An answer this browser did not ask for: a page that says so, the password login offered.
    page.goto("/auth/oidc/test/callback?code=forged&state=forged")
    expect(page.get_by_role("heading", name="Login not completed")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("did not start in this browser")
    page.get_by_role("link", name="Log in with your password").click()
    expect(page.get_by_label("Password")).to_be_visible()
