"""The administrators' pages, through the app's own routes with a browser's cookies (no browser)."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from mlservice.errors import AppError
from mlservice.history import statistics
from mlservice.history.statistics import Bucket, TimeBucket
from mlservice.jobs.tables import JobStatus
from mlservice.users.usecases import create_admin
from mlservice.wallet import service as wallets
from mlservice.web.admin import history as admin_history
from mlservice.web.admin import users as admin_users
from mlservice.web.admin_charts import nice_ticks
from tests.conftest import PASSWORD, Service
from tests.fixtures.history import add_job, add_request, add_submitted, user_id
from tests.fixtures.web import browser, csrf

TOKEN = "admin-token-" + "z" * 32
T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
DASH, TIMES = "\u2013", "\u00d7"  # as the pages write ranges and image sizes
PAGES = [
    "/admin",
    "/admin/users",
    "/admin/credits",
    "/admin/models",
    "/admin/history",
    "/admin/stats",
    "/admin/history/delete",
]


async def new_admin(service: Service) -> str:
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await create_admin(service.db, service.settings, email, PASSWORD)
    return email


async def new_user(service: Service) -> tuple[str, uuid.UUID]:
    email = f"user-{uuid.uuid4().hex[:8]}@example.com"
    return email, await user_id(service, await service.user(email))


async def submit(client: httpx.AsyncClient, url: str, **data: Any) -> httpx.Response:
    """POST a form as the page would (with its CSRF token); returns the unfollowed answer."""
    if "csrf_token" not in data:
        await client.get("/admin")  # a page sets the CSRF cookie if there is none yet
        data["csrf_token"] = csrf(client)
    return await client.post(url, data=data)


async def follow(client: httpx.AsyncClient, response: httpx.Response) -> str:
    """The page a redirect leads to, with its one-time notice, as text."""
    assert response.status_code == 303, response.text
    page = await client.get(response.headers["location"])
    assert page.status_code == 200, page.text
    return html.unescape(page.text)


def text(response: httpx.Response) -> str:
    return html.unescape(response.text)


async def balance(service: Service, owner: uuid.UUID) -> int:
    async with service.db.session() as session:
        return (await wallets.get_wallet(session, owner)).balance


def plain(page: str) -> str:
    """The page's words, without tags: what a reader sees."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", page))


def row_of(page: str, email: str) -> str:
    match = re.search(
        rf'<tr id="user-[^"]+" data-testid="user-row" data-email="{re.escape(email)}">(.*?)</tr>', page, re.S
    )
    assert match, f"no row for {email}"
    return match.group(1)


def cell(row: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}">([^<]*)<', row)
    assert match, testid
    return match.group(1).strip()


# -- access ------------------------------------------------------------------------------------------


async def test_every_admin_page_renders_for_an_admin(service: Service) -> None:
    async with browser(service, await new_admin(service)) as admin:
        for path in PAGES:
            r = await admin.get(path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            assert "<h1>" in r.text
            assert 'aria-current="page">Admin<' in r.text or 'href="/admin" aria-current="page"' in r.text
            # Every asset from this server; no inline scripts or styles (the CSP forbids them).
            external = re.findall(r'(?:src|href|action)="((?:https?:)?//[^"]*)"', r.text)
            assert all(url.startswith("http://testserver/") for url in external), (path, external)
            assert "<script>" not in r.text
            assert " style=" not in r.text
            assert "<style" not in r.text
            assert "/static/admin.js" in r.text


async def test_normal_users_get_the_403_page(service: Service) -> None:
    email, target = await new_user(service)
    async with browser(service, email) as user:
        for path in PAGES:
            r = await user.get(path)
            assert r.status_code == 403, path
            assert "Administrators only." in r.text
        await user.get("/")
        for path in (
            f"/admin/users/{target}/role",
            f"/admin/users/{target}/adjustments",
            "/admin/models/test-echo",
            "/admin/history/delete",
            "/admin/credits/grants",
            "/admin/credits/promo-codes",
            "/admin/credits/grants/1/void",
            "/admin/refunds",
        ):
            r = await user.post(path, data={"csrf_token": csrf(user), "amount": "5", "reason": "x"})
            assert r.status_code == 403, path
    assert (await balance(service, target)) == 100


async def test_anonymous_visitors_are_sent_to_the_login_page(service: Service) -> None:
    async with browser(service) as anonymous:
        for path in PAGES:
            r = await anonymous.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"] == f"/login?next={path}"
        r = await anonymous.get("/admin/users?search=ann")
        assert r.headers["location"].startswith("/login?next=/admin/users%3Fsearch%3Dann")


async def test_forms_need_the_csrf_token(service: Service) -> None:
    _, target = await new_user(service)
    async with browser(service, await new_admin(service)) as admin:
        r = await admin.post(f"/admin/users/{target}/adjustments", data={"amount": "5", "reason": "x"})
        assert r.status_code == 403
        r = await submit(
            admin, f"/admin/users/{target}/adjustments", amount="5", reason="x", csrf_token="forged"
        )
        assert r.status_code == 403
    assert (await balance(service, target)) == 100


# -- users -------------------------------------------------------------------------------------------


async def test_users_list_search_and_pages(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    admin_email = await new_admin(service)
    for name in ("ann.smith", "bob_jones", "annabel"):
        await service.user(f"{name}@example.com")
    async with browser(service, admin_email) as admin:
        page = text(await admin.get("/admin/users"))
        assert f"Showing 1{DASH}4 of 4" in page
        ann = row_of(page, "ann.smith@example.com")
        assert (cell(ann, "balance"), cell(ann, "held"), cell(ann, "available")) == ("100", "0", "100")
        assert cell(ann, "role") == "user"
        assert cell(ann, "active") == "active"
        assert cell(row_of(page, admin_email), "role") == "admin"
        assert "(you)" in row_of(page, admin_email)

        found = text(await admin.get("/admin/users", params={"search": "ANN"}))
        assert f"Showing 1{DASH}2 of 2" in found
        assert "bob_jones" not in found

        monkeypatch.setattr(admin_users, "USERS_PER_PAGE", 3)
        first = text(await admin.get("/admin/users"))
        assert f"Showing 1{DASH}3 of 4" in first
        assert 'href="/admin/users?offset=3"' in first
        second = text(await admin.get("/admin/users?offset=3"))
        assert f"Showing 4{DASH}4 of 4" in second
        assert 'rel="prev"' in second
        assert 'rel="next"' not in second
        # Nonsense in the address is no error: the first page.
        assert (await admin.get("/admin/users?offset=abc")).status_code == 200


async def test_make_admin_deactivate_and_self_refusals(service: Service) -> None:
    admin_email = await new_admin(service)
    email, target = await new_user(service)
    async with browser(service, admin_email) as admin:
        back = "/admin/users?search=user-"
        r = await submit(admin, f"/admin/users/{target}/role", admin_role="1", back=back)
        assert r.headers["location"] == f"{back}#user-{target}"
        page = await follow(admin, r)
        assert f"{email} is now an administrator." in page
        assert cell(row_of(page, email), "role") == "admin"
        # The new administrator may open the admin pages now.
        async with browser(service, email) as promoted:
            assert (await promoted.get("/admin")).status_code == 200

        page = await follow(admin, await submit(admin, f"/admin/users/{target}/role", admin_role="0"))
        assert f"{email} is no longer an administrator." in page
        page = await follow(admin, await submit(admin, f"/admin/users/{target}/active", active="0"))
        assert f"{email} is deactivated" in page
        assert cell(row_of(page, email), "active") == "deactivated"
        async with browser(service) as them:
            await them.get("/login")
            r = await them.post(
                "/login", data={"username": email, "password": PASSWORD, "csrf_token": csrf(them)}
            )
            assert r.status_code == 400
        page = await follow(admin, await submit(admin, f"/admin/users/{target}/active", active="1"))
        assert f"{email} can sign in again." in page

        # An outside address in `back` is not followed.
        r = await submit(admin, f"/admin/users/{target}/active", active="1", back="https://evil.example/")
        assert r.headers["location"].startswith("/admin/users#")

        me = await user_id(service, await service.login(admin_email))
        page = await follow(admin, await submit(admin, f"/admin/users/{me}/role", admin_role="0"))
        assert "You cannot remove your own admin role; ask another administrator." in page
        page = await follow(admin, await submit(admin, f"/admin/users/{me}/active", active="0"))
        assert "You cannot deactivate your own account." in page
        assert (await admin.get("/admin")).status_code == 200
        page = await follow(admin, await submit(admin, f"/admin/users/{uuid.uuid4()}/active", active="0"))
        assert "There is no user with this id." in page


async def test_adjust_balance_up_down_and_refused_overdraft(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin_email = await new_admin(service)
        email = f"user-{uuid.uuid4().hex[:8]}@example.com"
        headers = await service.user(email)
        target = await user_id(service, headers)
        # A job that waits (no workers) holds its price: 3 of the 100 credits.
        r = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=headers)
        assert r.status_code == 201
        async with browser(service, admin_email) as admin:
            page = await follow(
                admin,
                await submit(admin, f"/admin/users/{target}/adjustments", amount="+50", reason="goodwill"),
            )
            assert f"Added 50 credits to {email}: balance 150, available 147." in page
            row = row_of(page, email)
            assert (cell(row, "balance"), cell(row, "held"), cell(row, "available")) == ("150", "3", "147")

            page = await follow(
                admin,
                await submit(admin, f"/admin/users/{target}/adjustments", amount="-47", reason="correction"),
            )
            assert f"Took 47 credits from {email}: balance 103, available 100." in page

            page = await follow(
                admin,
                await submit(admin, f"/admin/users/{target}/adjustments", amount="-101", reason="too much"),
            )
            assert (
                "The balance was not changed: Taking 101 credits would leave -1 available; "
                "at most 100 can be taken now." in page
            )
            for amount, reason, message in [
                ("0", "nothing", "The amount must not be 0."),
                ("ten", "words", "The amount must be a whole number."),
                ("", "empty", "The amount must be a whole number."),
                ("5", "   ", "Give a reason of at most 500 characters"),
                ("5", "x" * 501, "Give a reason of at most 500 characters"),
            ]:
                page = await follow(
                    admin,
                    await submit(admin, f"/admin/users/{target}/adjustments", amount=amount, reason=reason),
                )
                assert message in page, amount
            row = row_of(page, email)
            assert (cell(row, "balance"), cell(row, "available")) == ("103", "100")

        ledger = await service.client.get("/api/wallet/transactions", headers=headers)
        notes = [e["note"] for e in ledger.json()["items"] if e["type"] == "adjustment"]
        assert notes == [f"correction (by {admin_email})", f"goodwill (by {admin_email})"]


# -- models ------------------------------------------------------------------------------------------


def model_form(**changes: str) -> dict[str, str]:
    return {"price": "3", "enabled": "1", "max_batch_size": "4", "max_wait_ms": "20", **changes}


async def test_price_change_shows_on_the_home_page(service: Service) -> None:
    user_email, _ = await new_user(service)
    async with browser(service, await new_admin(service)) as admin, browser(service, user_email) as user:
        page = text(await admin.get("/admin/models"))
        assert 'id="price-test-echo"' in page
        assert 'value="3"' in page
        assert 'id="batch-test-echo"' in page
        assert "1 to 4 for this model" in page

        r = await submit(admin, "/admin/models/test-echo", **model_form(price="7"))
        assert r.headers["location"] == "/admin/models#model-test-echo"
        assert "Saved Echo (tests): price 7 credits." in await follow(admin, r)
        home = text(await user.get("/"))
        assert re.search(r'data-testid="price-test-echo"><strong>7</strong>', home)

        r = await submit(
            admin, "/admin/models/test-echo", **model_form(price="7", max_batch_size="2", max_wait_ms="0")
        )
        assert "Saved Echo (tests): max batch size 2, max wait 0 ms." in await follow(admin, r)
        r = await submit(
            admin, "/admin/models/test-echo", **model_form(price="7", max_batch_size="2", max_wait_ms="0")
        )
        assert "Nothing to change for Echo (tests)." in await follow(admin, r)

        form = model_form(price="7", max_batch_size="2", max_wait_ms="0")
        del form["enabled"]  # an unticked checkbox is not sent
        assert "Saved Echo (tests): disabled." in await follow(
            admin, await submit(admin, "/admin/models/test-echo", **form)
        )
        assert 'data-testid="price-test-echo"' not in (await user.get("/")).text
        assert "test-echo" in (await admin.get("/admin/models")).text


async def test_queue_cap_set_reset_and_lifted_from_the_form(service: Service) -> None:
    async with browser(service, await new_admin(service)) as admin:
        page = text(await admin.get("/admin/models"))
        assert re.search(r'id="queue-test-echo"[^>]*value=""[^>]*placeholder="1000"', page, re.S)
        r = await submit(admin, "/admin/models/test-echo", **model_form(max_queued_jobs="50"))
        assert "Saved Echo (tests): queue cap 50." in await follow(admin, r)
        r = await submit(admin, "/admin/models/test-echo", **model_form(max_queued_jobs="0"))
        assert "Saved Echo (tests): no queue cap." in await follow(admin, r)
        r = await submit(admin, "/admin/models/test-echo", **model_form(max_queued_jobs=""))
        assert "Saved Echo (tests): queue cap: the default." in await follow(admin, r)
        r = await submit(admin, "/admin/models/test-echo", **model_form(max_queued_jobs=""))
        assert "Nothing to change for Echo (tests)." in await follow(admin, r)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"max_queued_jobs": "-5"}, "queue", "Queue cap: must be greater than or equal to 0."),
        ({"price": "-1"}, "price", "Price: must be greater than or equal to 0."),
        ({"price": "lots"}, "price", "Price: enter a whole number, not 'lots'."),
        ({"price": ""}, "price", "Price: enter a whole number."),
        ({"max_batch_size": "5"}, "batch", "The model 'test-echo' takes at most 4 inputs per batch."),
        ({"max_batch_size": "0"}, "batch", "Max batch size: must be greater than or equal to 1."),
        ({"max_wait_ms": "1001"}, "wait", "Max wait: must be less than or equal to 1000."),
    ],
)
async def test_model_form_shows_what_is_wrong(
    service: Service, changes: dict[str, str], field: str, message: str
) -> None:
    async with browser(service, await new_admin(service)) as admin:
        r = await submit(admin, "/admin/models/test-echo", **{**model_form(price="9"), **changes})
        assert r.status_code == 422
        page = text(r)
        assert message in page
        assert re.search(rf'id="{field}-test-echo"[^>]*aria-invalid="true"', page, re.S)
        # What was typed stays in the form; nothing was saved.
        if "price" not in changes:
            assert 'value="9"' in page
        models = await service.client.get("/api/models")
        assert {m["slug"]: m["price"] for m in models.json()}["test-echo"] == 3


async def test_unknown_model_is_a_404_page(service: Service) -> None:
    async with browser(service, await new_admin(service)) as admin:
        r = await submit(admin, "/admin/models/nope", **model_form())
        assert r.status_code == 404
        assert "There is no model 'nope'." in text(r)


# -- history -----------------------------------------------------------------------------------------


async def seed_history(service: Service) -> tuple[str, str]:
    """Two users' requests on 1 and 2 May 2026: accepted, refused and failed."""
    ann_email, ann = await new_user(service)
    bob_email, bob = await new_user(service)
    async with service.db.session(write=True) as session:
        job = add_job(
            session,
            ann,
            "image-classification",
            at=T0,
            processing_ms=12.5,
            queue_us=3000,
            output={"predictions": [{"label": "tabby cat", "score": 0.9}]},
        )
        await session.flush()
        add_request(
            session,
            ann,
            "image-classification",
            at=T0,
            job_id=job,
            input_bytes=20480,
            width=640,
            height=480,
        )
        add_request(
            session,
            ann,
            "image-classification",
            at=T0 + timedelta(minutes=1),
            http_status=415,
            error_code="unsupported_media_type",
            input_bytes=12,
        )
        await add_submitted(
            session,
            bob,
            "test-echo",
            at=T0 + timedelta(days=1),
            status=JobStatus.failed,
            processing_ms=2.0,
            queue_us=1000,
            error_code="model_error",
        )
    return ann_email, bob_email


def history_rows(page: str) -> list[str]:
    return re.findall(r'<tr data-testid="history-row">(.*?)</tr>', page, re.S)


async def test_history_rows_and_filters(service: Service) -> None:
    ann, bob = await seed_history(service)
    async with browser(service, await new_admin(service)) as admin:
        page = text(await admin.get("/admin/history"))
        rows = history_rows(page)
        assert len(rows) == 3
        newest, refused, accepted = rows
        assert bob in newest
        assert "test-echo" in newest
        assert ">failed<" in newest
        assert "model_error" in newest
        assert "it broke" in newest
        assert "2 ms" in newest
        assert "1 ms" in newest
        assert "2026-05-01 12:01:00" in refused
        assert ">415<" in refused
        assert "unsupported_media_type" in refused
        assert "12 B" in refused
        assert "2026-05-01 12:00:00" in accepted
        assert ann in accepted
        assert ">201<" in accepted
        assert "12.5 ms" in accepted
        assert "3 ms" in accepted
        assert "tabby cat" in accepted
        assert "20.5 kB" in accepted
        assert f"640{TIMES}480 px" in accepted

        async def rows_for(**params: str) -> list[str]:
            r = await admin.get("/admin/history", params=params)
            assert r.status_code == 200, r.text
            return history_rows(text(r))

        assert len(await rows_for(email=ann.upper())) == 2
        assert len(await rows_for(model="test-echo")) == 1
        assert len(await rows_for(status="rejected")) == 1
        assert len(await rows_for(status="succeeded")) == 1
        assert len(await rows_for(status="failed", email=bob)) == 1
        assert len(await rows_for(since="2026-05-02")) == 1
        assert len(await rows_for(until="2026-05-01")) == 2  # the "to" day is included
        assert len(await rows_for(since="2026-05-01", until="2026-05-01", model="image-classification")) == 2
        assert await rows_for(since="2026-05-03") == []

        r = await admin.get("/admin/history", params={"status": "weird", "since": "yesterday"})
        assert r.status_code == 422
        assert "Status: choose one of" in text(r)
        assert "From: enter a date as YYYY-MM-DD." in text(r)
        assert 'value="yesterday"' in text(r)


async def test_history_pages_with_the_cursor(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_history, "HISTORY_PER_PAGE", 2)
    _, owner = await new_user(service)
    async with service.db.session(write=True) as session:
        for i in range(5):
            add_request(
                session,
                owner,
                f"model-{i}",
                at=T0 + timedelta(minutes=i),
                http_status=404,
                error_code="model_not_found",
            )
    async with browser(service, await new_admin(service)) as admin:
        seen: list[str] = []
        url = "/admin/history?status=rejected"
        for _ in range(3):
            page = text(await admin.get(url))
            seen += re.findall(r"<code>(model-\d)</code>", page)
            match = re.search(r'<a class="button" href="([^"]+)" rel="next">', page)
            if match is None:
                break
            url = match.group(1)
            assert "status=rejected" in url
            assert "cursor=" in url
        assert seen == [f"model-{i}" for i in (4, 3, 2, 1, 0)]
        assert "↑ Newest" in page
        assert "Older" not in page
        r = await admin.get("/admin/history", params={"cursor": "garbage!"})
        assert r.status_code == 422
        assert "This cursor is not one the history handed out." in text(r)


async def test_deleting_history_needs_confirmation_and_the_admin_token(service_factory: Any) -> None:
    async with service_factory(admin_token=TOKEN) as service:
        await seed_history(service)
        async with browser(service, await new_admin(service)) as admin:
            confirm = text(await admin.get("/admin/history/delete", params={"before": "2026-05-02"}))
            assert "every request that arrived before 2026-05-02 00:00:00 UTC" in plain(confirm)
            assert 'name="admin_token"' in confirm
            assert 'value="2026-05-02"' in confirm
            everything = text(await admin.get("/admin/history/delete"))
            assert "the whole request history" in everything

            for token in ("", "wrong"):
                r = await submit(admin, "/admin/history/delete", before="2026-05-02", admin_token=token)
                assert r.status_code == 403
                assert "That is not the server's admin token; nothing was deleted." in text(r)
            assert len(history_rows(text(await admin.get("/admin/history")))) == 3

            r = await submit(admin, "/admin/history/delete", before="2026-05-02", admin_token=TOKEN)
            page = await follow(admin, r)
            assert "Deleted 2 requests that arrived before 2026-05-02 00:00:00 UTC from the history." in page
            assert len(history_rows(page)) == 1

            page = await follow(
                admin, await submit(admin, "/admin/history/delete", before="", admin_token=TOKEN)
            )
            assert "Deleted 1 request from the history." in page
            assert history_rows(page) == []

            page = await follow(admin, await admin.get("/admin/history/delete", params={"before": "soon"}))
            assert "Before: enter a date as YYYY-MM-DD." in page


async def test_deleting_history_without_a_configured_token_is_refused(service: Service) -> None:
    await seed_history(service)
    async with browser(service, await new_admin(service)) as admin:
        r = await submit(admin, "/admin/history/delete", before="", admin_token="anything")
        assert r.status_code == 403
        assert "This operation needs MLSERVICE_ADMIN_TOKEN to be set on the server" in text(r)
        assert len(history_rows(text(await admin.get("/admin/history")))) == 3


# -- statistics --------------------------------------------------------------------------------------


async def test_overview_headline_numbers(service: Service) -> None:
    _, owner = await new_user(service)
    now = datetime.now(UTC)
    async with service.db.session(write=True) as session:
        for status in (JobStatus.succeeded, JobStatus.succeeded, JobStatus.succeeded, JobStatus.failed):
            await add_submitted(
                session, owner, "test-echo", at=now - timedelta(hours=2), status=status, queue_us=5
            )
        add_request(
            session,
            owner,
            "test-echo",
            at=now - timedelta(hours=1),
            http_status=402,
            error_code="insufficient_credits",
        )
        # Two days ago: not in the last 24 hours.
        await add_submitted(session, owner, "test-echo", at=now - timedelta(days=2), status=JobStatus.failed)
    async with browser(service, await new_admin(service)) as admin:
        page = text(await admin.get("/admin"))
        assert re.search(r'data-testid="users-total">2<', page)
        assert re.search(r'data-testid="requests-24h">5<', page)
        assert "1 rejected (20 %)" in page
        assert re.search(r'data-testid="error-rate-24h">25 %<', page)
        assert "1 of 4 finished jobs failed" in page
        for link in ("/admin/users", "/admin/models", "/admin/history", "/admin/stats"):
            assert f'href="{link}"' in page


async def test_stats_page_draws_the_numbers(service: Service) -> None:
    _, owner = await new_user(service)
    async with service.db.session(write=True) as session:
        for i, ms in enumerate([10.0, 20.0, 30.0, 40.0]):
            await add_submitted(
                session,
                owner,
                "image-classification",
                at=T0 + timedelta(minutes=i),
                processing_ms=ms,
                queue_us=1000 * (i + 1),
                output={"predictions": [{"label": "tabby cat" if i < 3 else "coffee mug"}]},
            )
        await add_submitted(
            session,
            owner,
            "test-echo",
            at=T0 + timedelta(hours=2),
            status=JobStatus.failed,
            processing_ms=5.0,
            queue_us=1,
        )
        add_request(
            session,
            owner,
            "test-echo",
            at=T0 + timedelta(hours=2, minutes=5),
            http_status=402,
            error_code="insufficient_credits",
        )
    async with browser(service, await new_admin(service)) as admin:
        r = await admin.get(
            "/admin/stats", params={"window": "custom", "since": "2026-05-01", "until": "2026-05-01"}
        )
        assert r.status_code == 200, r.text
        page = text(r)
        assert "From 2026-05-01 00:00:00 to 2026-05-02 00:00:00 UTC, per hour." in plain(page)
        assert re.search(r'data-testid="total-requests">6<', page)
        assert re.search(r'data-testid="total-rejected">1<', page)
        assert re.search(r'data-testid="total-error-rate">20 %<', page)
        # Requests over time: an SVG column per hour with its numbers, and the same in the table.
        assert page.count('<rect class="bar series-') >= 3
        assert "<svg" in page
        assert 'role="img"' in page
        assert "2026-05-01 12:00 to 13:00 UTC: Accepted 4 of 4" in page
        assert "2026-05-01 14:00 to 15:00 UTC: Failed 1 of 2" in page
        assert "2026-05-01 14:00 to 15:00 UTC: Rejected 1 of 2" in page
        table = re.search(r'data-testid="table-requests">(.*?)</table>', page, re.S)
        assert table is not None
        assert table.group(1).count("<tr>") == 1 + 24
        assert re.search(
            r"2026-05-01 12:00 to 13:00 UTC</th><td class=\"num\">4</td><td class=\"num\">4</td>"
            r"<td class=\"num\">0</td><td class=\"num\">0</td>",
            table.group(1),
        )
        # Latency percentiles (numpy's linear interpolation of 10, 20, 30, 40).
        assert "image-classification: p50 25 ms" in page
        assert "image-classification: p95 38.5 ms" in page
        assert "image-classification: p99 39.7 ms" in page
        assert "image-classification: p50 2.5 ms" in page  # queue: 1, 2, 3, 4 ms
        # Error rates per model, and the answers.
        assert "test-echo: Job error rate 100 %" in page
        assert "test-echo: Rejection rate 50 %" in page
        assert "image-classification: Job error rate 0 %" in page
        assert "tabby cat: Jobs 3" in page
        assert "coffee mug: Jobs 1" in page
        assert re.search(r"<th scope=\"row\">tabby cat</th><td class=\"num\">3</td>", page)

        for params in ({}, {"window": "7d"}, {"window": "30d"}, {"window": "nonsense"}):
            r = await admin.get("/admin/stats", params=params)
            assert r.status_code == 200, params
        assert "per day" in text(await admin.get("/admin/stats", params={"window": "7d"}))
        for params, message in [
            (
                {"window": "custom", "since": "2026-05-02", "until": "2026-05-01"},
                "`since` must be before `until`.",
            ),
            ({"window": "custom", "since": "May"}, "From: enter a date as YYYY-MM-DD."),
            ({"window": "custom"}, "From: enter the first day of the period."),
            ({"window": "custom", "since": "2000-01-01", "until": "2026-01-01"}, "more than 1000 days"),
        ]:
            r = await admin.get("/admin/stats", params=params)
            assert r.status_code == 422, params
            assert message in text(r)


# -- the time series ---------------------------------------------------------------------------------


async def test_requests_over_time_per_hour_and_day(service: Service) -> None:
    _, owner = await new_user(service)
    at = datetime(2026, 5, 1, 10, tzinfo=UTC)
    async with service.db.session(write=True) as session:
        # 10:00 hour: two accepted (one failed), one refused; the last microsecond of the hour too.
        await add_submitted(session, owner, "test-echo", at=at)
        await add_submitted(
            session, owner, "test-echo", at=at + timedelta(minutes=30), status=JobStatus.failed
        )
        add_request(
            session,
            owner,
            "test-echo",
            at=at + timedelta(minutes=59, seconds=59, microseconds=999_999),
            http_status=402,
            error_code="insufficient_credits",
        )
        # 11:00 exactly: the next hour. 13:00: after an empty hour.
        await add_submitted(session, owner, "test-echo", at=at + timedelta(hours=1), status=JobStatus.running)
        add_request(
            session,
            owner,
            None,
            at=at + timedelta(hours=3, minutes=1),
            http_status=422,
            error_code="validation_error",
        )
        # Next day, a replay (never counted), and a minute before the hours asked for below.
        await add_submitted(session, owner, "test-echo", at=at + timedelta(days=1))
        replayed = await add_submitted(session, owner, "test-echo", at=at + timedelta(hours=1, minutes=5))
        add_request(
            session, owner, "test-echo", at=at + timedelta(hours=1, minutes=6), job_id=replayed, replayed=True
        )
        await add_submitted(session, owner, "test-echo", at=at - timedelta(minutes=1))

    async with service.db.session() as session:
        hours = await statistics.requests_over_time(session, at, at + timedelta(hours=4), Bucket.hour)
        assert hours == [
            TimeBucket(at, requests=3, accepted=2, rejected=1, failed=1),
            TimeBucket(at + timedelta(hours=1), requests=2, accepted=2, rejected=0, failed=0),
            TimeBucket(at + timedelta(hours=2), requests=0, accepted=0, rejected=0, failed=0),
            TimeBucket(at + timedelta(hours=3), requests=1, accepted=0, rejected=1, failed=0),
        ]
        # A period that starts and ends inside hours: the buckets are whole UTC hours, the counts
        # only what is inside the period.
        part = await statistics.requests_over_time(
            session, at + timedelta(minutes=15), at + timedelta(hours=1, minutes=3), Bucket.hour
        )
        assert [(b.start.hour, b.requests, b.failed) for b in part] == [(10, 2, 1), (11, 1, 0)]

        days = await statistics.requests_over_time(
            session, datetime(2026, 4, 30, tzinfo=UTC), datetime(2026, 5, 3, tzinfo=UTC), Bucket.day
        )
        assert [(b.start.day, b.requests, b.accepted, b.rejected, b.failed) for b in days] == [
            (30, 0, 0, 0, 0),
            (1, 7, 5, 2, 1),
            (2, 1, 1, 0, 0),
        ]
        assert all(b.start.tzinfo is not None and b.start.utcoffset() == timedelta(0) for b in days)
        # Totals agree with the statistics of the same period.
        whole = await statistics.compute(
            session,
            service.app.state.components.predictors,
            days[0].start,
            days[-1].start + timedelta(days=1),
        )
        assert sum(b.requests for b in days) == whole.overall.requests
        assert sum(b.rejected for b in days) == whole.overall.rejected
        assert sum(b.failed for b in days) == whole.overall.jobs.failed

        with pytest.raises(AppError, match="more than 1000 hours"):
            await statistics.requests_over_time(session, at, at + timedelta(days=60), Bucket.hour)


def test_bucket_choice_and_ticks() -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    assert statistics.bucket_for(start, start + timedelta(hours=24)) is Bucket.hour
    assert statistics.bucket_for(start, start + timedelta(days=3)) is Bucket.hour
    assert statistics.bucket_for(start, start + timedelta(days=7)) is Bucket.day
    assert nice_ticks(0) == [0.0, 1.0]
    assert nice_ticks(7) == [0, 2, 4, 6, 8]
    assert nice_ticks(1.0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(39.7)[-1] == 40
    assert nice_ticks(123)[-1] >= 123
