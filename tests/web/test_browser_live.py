"""Live jobs in headless Chromium: the job page and the jobs list follow each job's event stream
(``GET /api/jobs/{id}/events``), show its progress, and fall back to polling when a stream is
refused; against a real ``mlservice serve`` with the ``test-steps`` model (a job in steps, each
reporting its progress)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.live_server import STEPS_PLUGIN, LiveServer, running_server
from tests.web.conftest import BrowserConsole, log_in, require_playwright
from tests.web.test_browser_user import api_job, balance_link, model_price, notice, submit_through_script

require_playwright()

from playwright.sync_api import Error as PlaywrightError  # noqa: E402
from playwright.sync_api import Page, Request, expect  # noqa: E402

Screenshot = Callable[[Page, str], Path]
STEP = re.compile(r"step (\d+) of (\d+)")


@pytest.fixture(scope="module")
def steps_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``mlservice serve`` (the embedded default: SQLite, jobs run in the process) with test-steps."""
    workdir = tmp_path_factory.mktemp("live-steps")
    url = f"sqlite+aiosqlite:///{workdir / 'mlservice.db'}"
    with running_server("live-steps-sqlite", url, model_cache, workdir, plugins=STEPS_PLUGIN) as server:
        yield server


@pytest.fixture
def page(browser_new_page: Callable[..., Page], steps_server: LiveServer) -> Page:
    page = browser_new_page(steps_server.url)
    log_in(page, steps_server.register())
    return page


class Requests:
    """The URLs of the requests a page sent to its server's API."""

    def __init__(self, page: Page) -> None:
        self.urls: list[str] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if "/api/" in request.url:
            self.urls.append(request.url)

    def matching(self, pattern: str) -> list[str]:
        return [url for url in self.urls if re.search(pattern, url)]


def progress_values(page: Page, bar: str, until: Callable[[], bool], within_s: float = 30) -> list[float]:
    """The values a <progress> element showed (in order, each once) until ``until()``."""
    seen: list[float] = []
    deadline = time.monotonic() + within_s
    while not until():
        assert time.monotonic() < deadline, f"still going after {within_s} s; progress seen: {seen}"
        try:
            value = page.evaluate(
                "(selector) => { const b = document.querySelector(selector);"
                " return b && b.hasAttribute('value') ? b.value : null; }",
                bar,
            )
        except PlaywrightError:  # the page reloads to show the result: nothing to read meanwhile
            value = None
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        page.wait_for_timeout(40)
    return seen


def test_the_job_page_follows_the_stream_and_shows_progress(
    page: Page, browser_screenshot: Screenshot
) -> None:
    requests = Requests(page)
    job = submit_through_script(page, "test-steps", "follow me", {"steps": 12, "step_ms": 400})
    page.goto(f"/jobs/{job}")
    live = page.locator("[data-job-live]")
    message = live.locator("[data-live-message]")
    expect(message).to_contain_text(STEP, timeout=30_000)
    browser_screenshot(page, "job-progress")
    result = page.get_by_test_id("result")
    values = progress_values(page, "[data-job-progress]", until=lambda: result.is_visible())

    # The bar moved forward step by step (the server coalesces updates: not every step need show).
    assert len(values) >= 2, values
    assert values == sorted(values), values
    assert 0 < values[0] < values[-1] <= 1, values
    expect(result).to_contain_text("FOLLOW ME")
    expect(page.locator(".job-status [data-status-badge]")).to_have_text("succeeded")
    expect(page.get_by_test_id("job-progress")).to_have_count(0)  # a finished job has no live section
    # It listened instead of polling: one stream, no long polls.
    assert requests.matching(rf"/api/jobs/{job}/events$"), requests.urls
    assert not requests.matching(r"\?wait="), requests.urls


def test_the_jobs_list_shows_each_running_jobs_progress(page: Page) -> None:
    requests = Requests(page)
    first = submit_through_script(page, "test-steps", "first", {"steps": 8, "step_ms": 300})
    second = submit_through_script(page, "test-steps", "second", {"steps": 8, "step_ms": 300})
    page.goto("/jobs")
    rows = {job: page.locator(f'[data-job-row][data-job-id="{job}"]') for job in (first, second)}
    expect(page.locator("[data-jobs-live]")).to_be_visible()
    expect(rows[second].locator("[data-cost]")).to_have_text(re.compile(r"^\d+ held$"))

    # One consumer: the first runs while the second waits, then the second runs.
    for job in (first, second):
        bar = f'[data-job-row][data-job-id="{job}"] [data-running-bar]'
        values = progress_values(
            page, bar, until=lambda job=job: rows[job].get_attribute("data-status") == "succeeded"
        )
        assert values, job
        assert values == sorted(values), (job, values)
        expect(rows[job].locator("[data-status-badge]")).to_have_text("succeeded")
        expect(rows[job].locator("[data-running-bar]")).to_be_hidden()
        expect(rows[job].locator("[data-duration]")).to_have_text(re.compile(r"\d+(\.\d)? (ms|s)"))
        cost = rows[job].locator("[data-cost]")
        expect(cost).to_have_text(cost.get_attribute("data-cost") or "?")  # charged once it succeeded
    expect(page.locator("[data-jobs-live]")).to_be_hidden()
    assert len(requests.matching(r"/api/jobs/[0-9a-f-]{36}/events$")) == 2, requests.urls
    assert not requests.matching(r"/api/jobs\?limit="), requests.urls  # no listing polls


def test_cancel_a_running_job_from_its_page(
    page: Page, steps_server: LiveServer, browser_screenshot: Screenshot
) -> None:
    price = model_price(steps_server, "test-steps")
    job = submit_through_script(page, "test-steps", "stop me", {"steps": 200, "step_ms": 100})
    page.goto(f"/jobs/{job}")
    expect(page.locator("[data-live-message]")).to_contain_text(STEP)
    expect(page.locator(".job-status [data-status-badge]")).to_have_text("running")
    expect(balance_link(page, 100 - price)).to_be_visible()  # held
    page.get_by_role("button", name=re.compile(r"^cancel", re.I)).click()
    expect(notice(page)).to_contain_text("canceled")
    expect(page.locator(".job-status [data-status-badge]")).to_have_text("canceled")
    body: dict[str, Any] = api_job(page, job)
    assert body["status"] == "canceled"
    assert 0 < body["progress"]["fraction"] < 1, body["progress"]
    expect(balance_link(page, 100)).to_be_visible()  # the hold released: nothing charged
    browser_screenshot(page, "job-canceled-while-running")


def test_a_refused_stream_falls_back_to_polling(page: Page, browser_console: BrowserConsole) -> None:
    # As when the user already has as many streams open as the server allows.
    browser_console.allow(r"EventSource|status of 429")
    page.route(
        re.compile(r"/api/jobs/[0-9a-f-]{36}/events$"),
        lambda route: route.fulfill(
            status=429,
            content_type="application/json",
            body='{"error": {"code": "too_many_streams", "message": "Too many open streams."}}',
            headers={"Retry-After": "5"},
        ),
    )
    requests = Requests(page)
    job = submit_through_script(page, "test-steps", "poll me", {"steps": 6, "step_ms": 300})
    page.goto(f"/jobs/{job}")
    expect(page.get_by_test_id("result")).to_contain_text("POLL ME", timeout=30_000)
    expect(page.locator(".job-status [data-status-badge]")).to_have_text("succeeded")
    assert requests.matching(rf"/api/jobs/{job}\?wait="), requests.urls
