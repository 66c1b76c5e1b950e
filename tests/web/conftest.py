"""Browser fixtures: a real ``mlservice serve`` process and headless Chromium driven by Playwright.

``live_server`` starts an unmodified ``mlservice serve`` on a free loopback port, on a fresh SQLite
database built by ``mlservice migrate`` (``live_server_pg``: the same on a scratch PostgreSQL
database), through ``running_server`` of tests/fixtures/live_server.py. Besides the built-in models
it serves ``test-echo`` (tests/fixtures/predictors.py). Its ``sleep_ms`` parameter keeps a job busy
for as long as a test needs.

``browser_page`` is a Chromium page on ``live_server``; every console error and uncaught script
error of the test's pages fails the test at teardown (``browser_console.allow`` lists the expected
ones). Screenshots go to ``$TEST_ARTIFACTS_DIR/screenshots`` (default ``var/test-artifacts``), and a
failing test leaves one of each of its pages under ``screenshots/failures``.

Chromium is Debian's (``/usr/bin/chromium``, ``make test`` installs it): Playwright cannot download
its own browser here. Without it the tests skip locally and fail under CI.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import BACKENDS, PASSWORD, PG_SERVER, Service
from tests.fixtures.live_server import ARTIFACTS, LiveServer, running_server
from tests.fixtures.oidc_provider import OpenIdProvider, running_provider

if TYPE_CHECKING:
    # Imported when a browser test runs, not here: the page tests beside them need no browser.
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

CHROMIUM = os.environ.get("MLSERVICE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
SCREENSHOTS = ARTIFACTS / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


@pytest.fixture(scope="session")
def live_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``mlservice serve`` on a fresh SQLite database, for the whole session."""
    workdir = tmp_path_factory.mktemp("live-sqlite")
    url = f"sqlite+aiosqlite:///{workdir / 'mlservice.db'}"
    with running_server("live-server-sqlite", url, model_cache, workdir) as server:
        yield server


@pytest.fixture(scope="session")
def live_pg_database_url() -> Iterator[str]:
    with scratch_pg_url("mlservice_browser") as url:
        yield url


@contextmanager
def scratch_pg_url(prefix: str) -> Iterator[str]:
    """A scratch PostgreSQL database, dropped afterwards. Synchronous (psycopg): Playwright's sync
    API keeps an event loop of its own on this thread, where asyncio.run cannot start another."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    server = f"postgresql://{PG_SERVER}/postgres"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def live_server_pg(
    live_pg_database_url: str, model_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``mlservice serve`` on a scratch PostgreSQL database, for the whole session."""
    workdir = tmp_path_factory.mktemp("live-postgresql")
    with running_server("live-server-postgresql", live_pg_database_url, model_cache, workdir) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def live_server_any(request: pytest.FixtureRequest) -> LiveServer:
    """Each backend of this run (MLSERVICE_TEST_BACKENDS) in turn."""
    fixture = "live_server" if request.param == "sqlite" else "live_server_pg"
    server: LiveServer = request.getfixturevalue(fixture)
    return server


# -- single sign-on (tests/web/test_oidc*.py) -------------------------------------------------------


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIdProvider]:
    """A real OpenID provider whose test client sends the browser back to http://testserver."""
    from tests.web.oidc_flow import BACK, SECOND_BACK

    with running_provider(
        tmp_path_factory.mktemp("oidc-provider"), [BACK, SECOND_BACK], ["http://testserver/login"]
    ) as running:
        yield running


@pytest.fixture
async def sso(service_factory: Callable[..., Any], provider: OpenIdProvider) -> AsyncIterator[Service]:
    """The app with ``provider`` as its provider "test" ("Log in with Test ID")."""
    async with service_factory(oidc_providers=[provider.settings()]) as svc:
        yield svc


# -- the browser ------------------------------------------------------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """A browser test cannot run here: it fails under CI (nothing may be skipped there), skips elsewhere."""
    if in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_playwright() -> None:
    """Called by each browser test module before it imports Playwright."""
    if importlib.util.find_spec("playwright") is None:
        missing("playwright is not installed: `make install` (the dev extra) installs it")


@pytest.fixture(scope="session")
def browser_executable() -> str:
    if shutil.which(CHROMIUM) is None:
        missing(f"{CHROMIUM} not found: `make chromium` installs it (apt-get install chromium)")
    return CHROMIUM


# Per module, never per session: while Playwright's sync API is up, its event loop counts as the
# thread's running loop, and the async tests that come after (pytest-asyncio) could not start theirs.
@pytest.fixture(scope="module")
def browser_chromium(browser_executable: str) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser_executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class BrowserConsole:
    """Console errors and uncaught exceptions of every page a test opens."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Expect errors matching ``pattern`` (e.g. the browser's own line for a 403 page)."""
        self.allowed.append(re.compile(pattern))

    def watch(self, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                self.errors.append(f"console error on {page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught on {page.url}: {error}"))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def browser_console() -> BrowserConsole:
    return BrowserConsole()


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    # The page fixtures read this at teardown: a failed test leaves screenshots of its pages.
    item.stash.setdefault(FAILED, False)
    if report.failed:
        item.stash[FAILED] = True
    return report


@pytest.fixture
def browser_new_page(
    browser_chromium: Browser,
    browser_console: BrowserConsole,
    browser_screenshots: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., Page]]:
    """``new_page(base_url, viewport=DESKTOP, **context_options)``: a page in a context of its own
    (its own cookies); all are closed at the end of the test, after the console check."""
    contexts: list[BrowserContext] = []

    def new_page(base_url: str, viewport: dict[str, int] | None = None, **options: Any) -> Page:
        context = browser_chromium.new_context(base_url=base_url, viewport=viewport or DESKTOP, **options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        browser_console.watch(page)
        return page

    yield new_page
    try:
        if request.node.stash.get(FAILED, False):
            failures = browser_screenshots / "failures"
            failures.mkdir(parents=True, exist_ok=True)
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
            for i, page in enumerate(p for c in contexts for p in c.pages):
                page.screenshot(path=failures / f"{slug}-{i}.png", full_page=True)
    finally:
        for context in contexts:
            context.close()
    unexpected = browser_console.unexpected()
    assert not unexpected, "the pages logged errors:\n" + "\n".join(unexpected)


@pytest.fixture
def browser_page(browser_new_page: Callable[..., Page], live_server: LiveServer) -> Page:
    """A desktop-sized page on ``live_server``, logged in as nobody."""
    return browser_new_page(live_server.url)


@pytest.fixture(scope="session")
def browser_screenshots() -> Path:
    """This run's screenshot folder, emptied of the last run's."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.fixture
def browser_screenshot(browser_screenshots: Path) -> Callable[[Page, str], Path]:
    """``browser_screenshot(page, "wallet")`` saves the whole page as screenshots/wallet.png."""

    def take(page: Page, name: str) -> Path:
        path = browser_screenshots / f"{name}.png"
        page.screenshot(path=path, full_page=True)
        return path

    return take


# -- what a person does in the browser, shared by the test modules ----------------------------------


def register_in_browser(page: Page, email: str, password: str = PASSWORD) -> None:
    """Fill in the registration form; the new account lands on the home page, logged in."""
    from playwright.sync_api import expect

    page.goto("/register")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Password again").fill(password)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def log_in(page: Page, email: str, password: str = PASSWORD, next_path: str = "/") -> None:
    from playwright.sync_api import expect

    page.goto("/login" if next_path == "/" else f"/login?next={next_path}")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
