"""A user's side of the web UI in headless Chromium, against a real ``mlservice serve`` process."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import jpeg_bytes
from tests.fixtures.live_server import LiveServer, unique_email
from tests.web.conftest import BrowserConsole, log_in, register_in_browser, require_playwright

require_playwright()

from playwright.sync_api import Locator, Page, expect  # noqa: E402

CAT = re.compile(r"tabby cat|tiger cat|Persian cat|Siamese cat|Egyptian Mau")
JOB_URL = re.compile(r"/jobs/([0-9a-f-]{36})$")  # also a JavaScript regex: no named group
RUN_BUTTON = re.compile(r"^\s*(run|submit|start)", re.I)
# A job's first run loads its model (the classifier, MiniLM) in the server: give it time.
JOB_DONE_MS = 60_000

Screenshot = Callable[[Page, str], Path]


def balance_link(page: Page, credits: int) -> Locator:
    """The balance in the page header ("N credits", a link to the wallet)."""
    return page.get_by_role("banner").get_by_role("link", name=re.compile(rf"\b{credits} credits"))


def notice(page: Page) -> Locator:
    """The one-time notice a page shows after a form (role=status)."""
    return page.get_by_role("status").filter(has_text=re.compile(r"\S"))


def model_price(server: LiveServer, slug: str) -> int:
    import httpx

    r = httpx.get(f"{server.url}/api/models/{slug}")
    assert r.status_code == 200, r.text
    return int(r.json()["price"])


def job_id(page: Page) -> str:
    expect(page).to_have_url(JOB_URL)
    match = JOB_URL.search(page.url)
    assert match is not None
    return match[1]


def api_job(page: Page, job: str) -> dict[str, Any]:
    """The job as the JSON API gives it to this browser's session (its cookie)."""
    r = page.request.get(f"/api/jobs/{job}")
    assert r.ok, r.text()
    body: dict[str, Any] = r.json()
    return body


def submit_through_script(page: Page, model: str, text: str, params: dict[str, Any]) -> str:
    """Submit a job with the page's own API helper (session cookie + CSRF header), as page
    scripts do; returns its id. For jobs whose form fields are not the subject of the test."""
    job: dict[str, Any] = page.evaluate(
        """async ([model, text, params]) => {
            const form = new FormData();
            form.append("model", model);
            form.append("text", text);
            form.append("params", JSON.stringify(params));
            return await window.mlservice.api("/api/jobs", {method: "POST", body: form});
        }""",
        [model, text, params],
    )
    return str(job["id"])


def test_register_log_in_top_up_and_classify_an_image(
    live_server_any: LiveServer,
    browser_new_page: Callable[..., Page],
    chelsea_jpeg: bytes,
    browser_screenshot: Screenshot,
) -> None:
    server = live_server_any
    page = browser_new_page(server.url)
    email = unique_email()

    # Register: logged in at once, with the sign-up bonus.
    register_in_browser(page, email)
    expect(page.get_by_role("status")).to_contain_text("100 free credits")
    expect(balance_link(page, 100)).to_be_visible()

    # Log out, and back in.
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("link", name="Log in")).to_be_visible()
    log_in(page, email)
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    sqlite = server.name.endswith("sqlite")  # one set of screenshots
    if sqlite:
        browser_screenshot(page, "home")

    # Top up 50 credits on the wallet page.
    page.get_by_role("link", name="Top up").click()
    expect(page).to_have_url(re.compile(r"/wallet"))
    page.get_by_label("Credits to add").fill("50")
    page.get_by_role("button", name="Add credits").click()
    expect(notice(page)).to_contain_text("Added 50 credits")
    expect(balance_link(page, 150)).to_be_visible()

    # Classify the Chelsea cat from the model's page; the job page shows the labels when done.
    price = model_price(server, "image-classification")
    page.goto("/")
    page.get_by_role("link", name=re.compile(r"^Image classification")).click()
    expect(page).to_have_url(re.compile(r"/models/image-classification$"))
    expect(page.get_by_role("main")).to_contain_text(re.compile(rf"\b{price} credits"))
    page.get_by_label("Top k").fill("3")
    if sqlite:
        browser_screenshot(page, "model-image-classification")
    page.get_by_label(re.compile(r"^Photo")).set_input_files(
        files=[{"name": "chelsea.jpg", "mimeType": "image/jpeg", "buffer": chelsea_jpeg}]
    )
    page.get_by_role("button", name=RUN_BUTTON).click()
    job = job_id(page)
    main = page.get_by_role("main")
    expect(main).to_contain_text(re.compile("succeeded", re.I), timeout=JOB_DONE_MS)
    predictions = api_job(page, job)["output"]["predictions"]
    assert len(predictions) == 3, predictions
    assert CAT.fullmatch(predictions[0]["label"]), predictions
    for prediction in predictions:
        expect(main.get_by_text(prediction["label"]).first).to_be_visible()
    expect(balance_link(page, 150 - price)).to_be_visible()
    if sqlite:
        browser_screenshot(page, "job-image-classification")


def test_movie_recommendations_from_a_text_query(
    live_server: LiveServer, browser_page: Page, browser_screenshot: Screenshot
) -> None:
    page = browser_page
    log_in(page, live_server.register())
    page.get_by_role("link", name=re.compile(r"^Movie recommendations")).click()
    expect(page).to_have_url(re.compile(r"/models/movie-recommendation$"))
    page.get_by_role("textbox").first.fill("a young wizard goes to a school of magic and makes friends")
    page.get_by_label("Top k").fill("4")
    browser_screenshot(page, "model-movie-recommendation")
    page.get_by_role("button", name=RUN_BUTTON).click()
    job = job_id(page)
    main = page.get_by_role("main")
    expect(main).to_contain_text(re.compile("succeeded", re.I), timeout=JOB_DONE_MS)
    films = api_job(page, job)["output"]["results"]
    assert len(films) == 4, films
    for film in films:
        expect(main.get_by_text(film["title"]).first).to_be_visible()
    browser_screenshot(page, "job-movie-recommendation")


def test_cancel_a_queued_job(
    live_server: LiveServer, browser_page: Page, browser_screenshot: Screenshot
) -> None:
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # if canceling asks for confirmation
    log_in(page, live_server.register())
    price = model_price(live_server, "test-echo")
    page.goto("/models/test-echo")
    # One test-echo consumer, kept busy for 5 s: the next job waits in the queue.
    busy = submit_through_script(page, "test-echo", "keep the worker busy", {"sleep_ms": 5000})
    wait_for_status(page, busy, "running")

    page.get_by_role("textbox").first.fill("cancel me")
    page.get_by_role("button", name=RUN_BUTTON).click()
    job = job_id(page)
    main = page.get_by_role("main")
    expect(main).to_contain_text(re.compile("queued", re.I))
    expect(balance_link(page, 100 - 2 * price)).to_be_visible()  # both held
    page.get_by_role("button", name=re.compile(r"^cancel", re.I)).click()
    expect(notice(page)).to_contain_text("canceled")
    expect(main).to_contain_text(re.compile("canceled", re.I))
    expect(main.get_by_role("button", name=re.compile(r"^cancel", re.I))).to_have_count(0)
    assert api_job(page, job)["status"] == "canceled"
    expect(balance_link(page, 100 - price)).to_be_visible()  # the canceled job's hold released
    browser_screenshot(page, "job-canceled")


def wait_for_status(page: Page, job: str, status: str, within_s: float = 30) -> None:
    import time

    deadline = time.monotonic() + within_s
    while (current := api_job(page, job)["status"]) != status:
        assert time.monotonic() < deadline, f"job {job} still {current}, not {status}"
        page.wait_for_timeout(50)


def test_job_list_job_page_and_wallet(
    live_server: LiveServer,
    browser_page: Page,
    browser_console: BrowserConsole,
    browser_screenshot: Screenshot,
) -> None:
    page = browser_page
    browser_console.allow(r"/wallet/top-up: .*status of 400")  # the refused top-up's page
    log_in(page, live_server.register())
    price = model_price(live_server, "test-echo")

    # A text job through the model's form; its page shows the result and the artifact link.
    page.get_by_role("link", name=re.compile(r"^Echo \(tests\)")).click()
    page.get_by_role("textbox").first.fill("hello from the browser")
    page.get_by_role("button", name=RUN_BUTTON).click()
    job = job_id(page)
    main = page.get_by_role("main")
    expect(main).to_contain_text(re.compile("succeeded", re.I), timeout=JOB_DONE_MS)
    expect(main).to_contain_text("HELLO FROM THE BROWSER")
    browser_screenshot(page, "job-detail")

    # The job list shows it, with its model and status, and links to its page.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs").click()
    expect(page).to_have_url(re.compile(r"/jobs$"))
    row = page.get_by_role("row").filter(has_text="Echo (tests)")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(re.compile("succeeded", re.I))
    browser_screenshot(page, "jobs")
    row.get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/jobs/{job}$"))

    # The wallet: the balance after the charge, its ledger, and top-ups (a wrong one refused).
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Wallet").click()
    expect(page).to_have_url(re.compile(r"/wallet$"))
    expect(balance_link(page, 100 - price)).to_be_visible()
    amount = page.get_by_label("Credits to add")
    amount.fill("0")
    amount.evaluate("input => input.form.noValidate = true")  # past the browser's own check
    page.get_by_role("button", name="Add credits").click()
    expect(page.get_by_role("alert")).to_contain_text("whole number of credits")
    expect(balance_link(page, 100 - price)).to_be_visible()
    page.get_by_label("Credits to add").fill("25")
    page.get_by_role("button", name="Add credits").click()
    expect(notice(page)).to_contain_text("Added 25 credits")
    expect(balance_link(page, 125 - price)).to_be_visible()
    entries = page.get_by_role("row")
    expect(entries.filter(has_text=re.compile(r"\+?25\b"))).not_to_have_count(0)
    expect(entries.filter(has_text=re.compile(rf"[-\u2212]{price}\b"))).not_to_have_count(0)
    browser_screenshot(page, "wallet")


def test_faces_enroll_list_and_remove(
    live_server: LiveServer, browser_page: Page, browser_screenshot: Screenshot
) -> None:
    from skimage import data

    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, live_server.register())
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Faces").click()
    expect(page).to_have_url(re.compile(r"/faces$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Face gallery")
    expect(page.get_by_role("main")).to_contain_text("No faces enrolled yet")
    browser_screenshot(page, "faces-empty")

    # Enroll the astronaut under a label; the gallery then lists her.
    page.get_by_role("main").get_by_role("link", name="Enroll a face").first.click()
    page.get_by_label(re.compile(r"^Photo")).set_input_files(
        files=[{"name": "astronaut.jpg", "mimeType": "image/jpeg", "buffer": jpeg_bytes(data.astronaut())}]
    )
    page.get_by_label("Label").fill("Eileen")
    page.get_by_role("button", name=RUN_BUTTON).click()
    job_id(page)
    expect(page.get_by_role("main")).to_contain_text(re.compile("succeeded", re.I), timeout=JOB_DONE_MS)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Faces").click()
    face = page.get_by_role("listitem").filter(has=page.get_by_role("heading", name="Eileen"))
    expect(face).to_have_count(1)
    browser_screenshot(page, "faces")
    face.get_by_text("Delete", exact=True).click()  # opens the confirmation
    face.get_by_role("button", name="Yes, delete").click()
    expect(notice(page)).to_contain_text("removed from your gallery")
    expect(page.get_by_role("heading", name="Eileen")).to_have_count(0)
