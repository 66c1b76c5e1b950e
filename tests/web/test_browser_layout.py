"""The pages on a phone-sized screen (no sideways scrolling), and the pages seen before logging in."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.fixtures.live_server import LiveServer
from tests.web.conftest import PHONE, BrowserConsole, log_in, require_playwright

require_playwright()

from playwright.sync_api import Page, expect  # noqa: E402

Screenshot = Callable[[Page, str], Path]

# What sticks out past the right edge of the layout viewport, described for the failure message.
WIDER_THAN_SCREEN = """() => {
    const width = document.documentElement.clientWidth;
    const wide = [];
    for (const element of document.querySelectorAll("body *")) {
        const box = element.getBoundingClientRect();
        // An element past the edge, or one whose content (a long word, a <pre>) spills out of it.
        const spills = element.scrollWidth > element.clientWidth + 1
            && getComputedStyle(element).overflowX === "visible";
        if (box.width > 0 && (box.right > width + 1 || spills)) {
            const name = element.tagName.toLowerCase()
                + (element.id ? "#" + element.id : "")
                + (element.className && typeof element.className === "string"
                    ? "." + element.className.trim().split(/\\s+/).join(".") : "");
            wide.push(`${name}: right edge ${Math.round(box.right)}, content ${element.scrollWidth} px`);
        }
    }
    return {
        width,
        scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
        wide: wide.slice(0, 10),
    };
}"""


def assert_fits_the_screen(page: Page) -> None:
    layout = page.evaluate(WIDER_THAN_SCREEN)
    assert layout["width"] == PHONE["width"], layout  # the page declares a device-width viewport
    assert layout["scrollWidth"] <= layout["width"], f"{page.url} scrolls sideways: {layout}"


def test_phone_sized_screen_shows_home_and_job_pages_without_sideways_scrolling(
    live_server: LiveServer, browser_new_page: Callable[..., Page], browser_screenshot: Screenshot
) -> None:
    page = browser_new_page(
        live_server.url, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    log_in(page, live_server.register())
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    assert_fits_the_screen(page)
    browser_screenshot(page, "phone-home")

    page.get_by_role("link", name=re.compile(r"^Echo \(tests\)")).click()
    assert_fits_the_screen(page)
    browser_screenshot(page, "phone-model")
    page.get_by_role("textbox").first.fill("a job submitted from a phone " * 4)
    page.get_by_role("button", name=re.compile(r"^\s*run", re.I)).click()
    expect(page).to_have_url(re.compile(r"/jobs/[0-9a-f-]{36}$"))
    expect(page.get_by_role("main")).to_contain_text(re.compile("succeeded", re.I), timeout=60_000)
    assert_fits_the_screen(page)
    browser_screenshot(page, "phone-job")

    for path, shot in (("/jobs", "phone-jobs"), ("/wallet", "phone-wallet"), ("/faces", "phone-faces")):
        page.goto(path)
        assert_fits_the_screen(page)
        browser_screenshot(page, shot)


def test_log_in_and_register_pages(
    live_server: LiveServer,
    browser_page: Page,
    browser_console: BrowserConsole,
    browser_screenshot: Screenshot,
) -> None:
    page = browser_page
    browser_console.allow(r"status of 400")  # the refused forms come back as 400 pages
    # A visitor is sent to the log-in page, and back where they were going afterwards.
    page.goto("/wallet")
    expect(page).to_have_url(re.compile(r"/login\?next=/wallet$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Log in")
    browser_screenshot(page, "login")

    # A wrong password is refused with a message tied to the form.
    email = live_server.register()
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("not the password 1")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong e-mail or password")
    browser_screenshot(page, "login-refused")

    page.get_by_role("main").get_by_role("link", name="Register").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Create an account")
    # An address already taken, and passwords that differ, are both refused.
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password", exact=True).fill("correct horse 42")
    page.get_by_label("Password again").fill("correct horse 43")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_contain_text("passwords differ")
    page.get_by_label("Password", exact=True).fill("correct horse 42")
    page.get_by_label("Password again").fill("correct horse 42")
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_contain_text("already exists")
    browser_screenshot(page, "register")
