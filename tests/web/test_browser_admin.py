"""The administrators' side of the web UI in headless Chromium, against a real ``mlservice serve``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.web.conftest import BrowserConsole, LiveServer, log_in, require_playwright

require_playwright()

from playwright.sync_api import Locator, Page, expect  # noqa: E402

Screenshot = Callable[[Page, str], Path]
# A model no other browser test runs or prices: changing its price here disturbs nobody.
PRICED = "background-removal"
ADMIN_SECTIONS = {
    "Users": ("/admin/users", "admin-users"),
    "Credits": ("/admin/credits", "admin-credits"),
    "Models": ("/admin/models", "admin-models"),
    "History": ("/admin/history", "admin-history"),
    "Statistics": ("/admin/stats", "admin-stats"),
}


def main_nav(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Main")


def admin_nav(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Administration")


def card_of(page: Page, title: str) -> Locator:
    """The list item (a model card) whose heading is ``title``."""
    return page.get_by_role("listitem").filter(has=page.get_by_role("heading", name=title, exact=True))


def notice(page: Page) -> Locator:
    return page.get_by_role("status")


def catalog_model(server: LiveServer, slug: str) -> dict[str, object]:
    r = httpx.get(f"{server.url}/api/models/{slug}")
    assert r.status_code == 200, r.text
    model: dict[str, object] = r.json()
    return model


def test_admin_changes_a_price_and_a_user_sees_it(
    live_server: LiveServer, browser_new_page: Callable[..., Page], browser_screenshot: Screenshot
) -> None:
    model = catalog_model(live_server, PRICED)
    title, new_price = str(model["title"]), int(str(model["price"])) + 7

    admin = browser_new_page(live_server.url)
    log_in(admin, live_server.create_admin())
    main_nav(admin).get_by_role("link", name="Admin").click()
    expect(admin.get_by_role("heading", level=1)).to_have_text("Administration")
    admin_nav(admin).get_by_role("link", name="Models").click()
    card = card_of(admin, title)
    card.get_by_label(re.compile(r"^Price")).fill(str(new_price))
    card.get_by_role("button", name=re.compile(r"^Save")).click()
    expect(notice(admin)).to_contain_text(f"price {new_price} credits")
    expect(card_of(admin, title).get_by_label(re.compile(r"^Price"))).to_have_value(str(new_price))

    # A user, in a browser of their own: the catalog and the model's page show the new price.
    user = browser_new_page(live_server.url)
    log_in(user, live_server.register())
    card = card_of(user, title)
    expect(card).to_contain_text(re.compile(rf"\b{new_price} credits per run"))
    card.get_by_role("link", name=re.compile(r"^Run")).click()
    expect(user).to_have_url(re.compile(rf"/models/{PRICED}$"))
    expect(user.get_by_role("main")).to_contain_text(re.compile(rf"\b{new_price} credits"))
    browser_screenshot(user, "model-price-changed")


def test_a_user_who_is_not_an_admin_gets_no_admin_page(
    live_server: LiveServer,
    browser_page: Page,
    browser_console: BrowserConsole,
    browser_screenshot: Screenshot,
) -> None:
    page = browser_page
    # Before logging in: the log-in page, which comes back to the admin page afterwards.
    page.goto("/admin/models")
    expect(page).to_have_url(re.compile(r"/login\?next=/admin/models$"))

    log_in(page, live_server.register())
    expect(main_nav(page).get_by_role("link", name="Models")).to_be_visible()
    expect(main_nav(page).get_by_role("link", name="Admin")).to_have_count(0)

    # Chromium logs every 4xx document it loads as a console error: these ones are the point.
    browser_console.allow(r"status of 403")
    for path in (
        "/admin",
        "/admin/users",
        "/admin/credits",
        "/admin/models",
        "/admin/history",
        "/admin/stats",
    ):
        response = page.goto(path)
        assert response is not None
        assert response.status == 403, path
        expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
        expect(admin_nav(page)).to_have_count(0)
    browser_screenshot(page, "admin-forbidden")

    # Nor do the forms behind them answer (a price change posted by hand).
    response = page.request.post(f"/admin/models/{PRICED}", form={"price": "0"})
    assert response.status == 403


def run_echo_jobs(server: LiveServer, headers: dict[str, str], texts: list[str]) -> list[int]:
    """Submit test-echo jobs through the API and wait for them; returns the HTTP statuses."""
    statuses, jobs = [], []
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as api:
        for text in texts:
            r = api.post("/api/jobs", data={"model": "test-echo", "text": text})
            statuses.append(r.status_code)
            if r.status_code == 201:
                jobs.append(r.json()["id"])
        deadline = time.monotonic() + 30
        for job in jobs:
            while api.get(f"/api/jobs/{job}").json()["status"] in ("queued", "running"):
                assert time.monotonic() < deadline, f"job {job} did not finish"
                time.sleep(0.05)
    return statuses


def test_admin_pages_and_making_another_user_an_admin(
    live_server: LiveServer, browser_new_page: Callable[..., Page], browser_screenshot: Screenshot
) -> None:
    member = live_server.register()
    # Something for the history and the statistics to show: a success, a model error ("boom")
    # and a refused input ("invalid").
    statuses = run_echo_jobs(live_server, live_server.bearer(member), ["hello", "boom", "invalid"])
    assert statuses == [201, 201, 422]
    page = browser_new_page(live_server.url)
    # The role and deactivation forms ask for confirmation first.
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, live_server.create_admin())
    main_nav(page).get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Administration")
    browser_screenshot(page, "admin-overview")

    for name, (path, shot) in ADMIN_SECTIONS.items():
        admin_nav(page).get_by_role("link", name=name).click()
        expect(page).to_have_url(re.compile(rf"{path}$"))
        expect(admin_nav(page).get_by_role("link", name=name)).to_have_attribute("aria-current", "page")
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        browser_screenshot(page, shot)

    # The history, filtered down to the member: their three requests.
    admin_nav(page).get_by_role("link", name="History").click()
    page.get_by_label("User e-mail").fill(member)
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("row").filter(has_text=member)).to_have_count(3)

    # Find the member by e-mail and make them an administrator.
    admin_nav(page).get_by_role("link", name="Users").click()
    page.get_by_role("searchbox", name="Search by e-mail").fill(member)
    page.get_by_role("button", name="Search").click()
    row = page.get_by_role("row").filter(has_text=member)
    expect(row).to_have_count(1)
    row.get_by_role("button", name=f"Make admin for {member}").click()
    expect(notice(page)).to_contain_text(f"{member} is now an administrator")
    row = page.get_by_role("row").filter(has_text=member)
    expect(row.get_by_role("button", name=f"Remove admin for {member}")).to_be_visible()

    # Their next page shows the Admin link, and the admin pages open.
    other = browser_new_page(live_server.url)
    log_in(other, member)
    main_nav(other).get_by_role("link", name="Admin").click()
    expect(other.get_by_role("heading", level=1)).to_have_text("Administration")
