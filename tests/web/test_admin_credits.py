"""The admin credits page: bonus grants and voiding them, promotion codes, refunds of a job."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from mlservice.wallet.tables import CreditGrant
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import submit as submit_job
from tests.fixtures.api import wallet
from tests.fixtures.web import browser
from tests.web.test_admin_pages import follow, new_admin, submit, text


def grant_row(page: str, grant_id: int) -> str:
    match = re.search(rf'<tr id="grant-{grant_id}" data-testid="grant-row".*?</tr>', page, re.S)
    assert match, f"no row for grant {grant_id}"
    return match.group(0)


async def grants_of(service: Service, note: str) -> list[CreditGrant]:
    async with service.db.session() as session:
        rows = await session.scalars(select(CreditGrant).where(CreditGrant.note.contains(note)))
        return list(rows)


async def test_the_page_lists_grants_and_codes(service: Service) -> None:
    async with browser(service, await new_admin(service)) as admin:
        page = text(await admin.get("/admin/credits"))
        assert "<h1>Credits</h1>" in page
        assert 'href="/admin/credits" aria-current="page"' in page
        for form in ("/admin/credits/grants", "/admin/credits/promo-codes", "/admin/refunds"):
            assert f'action="{form}"' in page
        assert "signup_bonus" in page  # the administrator's own welcome bonus
        # The users page has the refund form too.
        assert 'action="/admin/refunds"' in text(await admin.get("/admin/users"))


async def test_grant_to_a_user_then_void_it(service: Service) -> None:
    email = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    ann = await service.user(email)
    async with browser(service, await new_admin(service)) as admin:
        until = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
        r = await submit(
            admin,
            "/admin/credits/grants",
            recipient=email.upper(),
            amount="25",
            expires=until,
            priority="10",
            note="outage",
        )
        page = await follow(admin, r)
        assert f"Granted 25 bonus credits to {email.upper()}." in page
        (made,) = await grants_of(service, "outage")
        assert (made.amount, made.priority) == (25, 10)
        # Up to the end of the day given.
        assert made.expires_at == datetime.fromisoformat(until).replace(tzinfo=UTC) + timedelta(days=1)
        assert (made.created_by or "").startswith("admin-")
        assert (await wallet(service, ann))["available"] == 125
        row = grant_row(page, made.id)
        assert email in row
        assert f'action="/admin/credits/grants/{made.id}/void"' in row

        page = await follow(admin, await submit(admin, f"/admin/credits/grants/{made.id}/void"))
        assert f"Grant {made.id} voided: 25 credits taken back." in page
        row = grant_row(page, made.id)
        assert "/void" not in row
        assert made.created_by in row  # voided by the same administrator
        assert (await wallet(service, ann))["available"] == 100
        page = await follow(admin, await submit(admin, f"/admin/credits/grants/{made.id}/void"))
        assert "The grant was not voided: Only a grant none of which" in page
        page = await follow(admin, await submit(admin, "/admin/credits/grants/nonsense/void"))
        assert "There is no such grant." in page
        page = await follow(admin, await submit(admin, "/admin/credits/grants/99999999/void"))
        assert "The grant was not voided: No such grant." in page


async def test_grant_to_everyone(service: Service) -> None:
    users = [await service.user() for _ in range(2)]
    async with browser(service, await new_admin(service)) as admin:
        r = await submit(admin, "/admin/credits/grants", recipient="Everyone", amount="7", note="launch")
        page = await follow(admin, r)
        assert "Granted 7 bonus credits to each of 3 accounts." in page
    assert len(await grants_of(service, "launch")) == 3
    for headers in users:
        assert (await wallet(service, headers))["available"] == 107


async def test_bad_grants_say_why_and_grant_nothing(service: Service) -> None:
    email = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    ann = await service.user(email)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"recipient": email, "amount": "lots", "note": "n"}, "Credits must be a whole number."),
        (
            {"recipient": email, "amount": "0", "note": "n"},
            "Credits: Input should be greater than or equal to 1.",
        ),
        ({"recipient": email, "amount": "5", "note": " "}, "Note: String should have at least 1 character."),
        ({"recipient": email, "amount": "5", "note": "n", "priority": "101"}, "Priority: Input should be"),
        ({"recipient": email, "amount": "5", "note": "n", "expires": "soon"}, "The expiry: enter a date"),
        ({"recipient": email, "amount": "5", "note": "n", "expires": yesterday}, "must be in the future."),
        ({"recipient": "nobody@example.com", "amount": "5", "note": "n"}, "There is no user with the e-mail"),
        ({"recipient": "", "amount": "5", "note": "n"}, "Give the user's e-mail address"),
    ]
    async with browser(service, await new_admin(service)) as admin:
        for form, message in cases:
            page = await follow(admin, await submit(admin, "/admin/credits/grants", **form))
            assert "Nothing was granted: " in page, form
            assert message in page, (form, page[page.find("flash") : page.find("flash") + 300])
    assert (await wallet(service, ann))["available"] == 100


async def test_a_promotion_code_appears_and_a_user_redeems_it(service: Service) -> None:
    ann = await service.user()
    async with browser(service, await new_admin(service)) as admin:
        r = await submit(
            admin,
            "/admin/credits/promo-codes",
            code="spring-26",
            amount="15",
            max_uses="2",
            redeem_until=(datetime.now(UTC) + timedelta(days=30)).date().isoformat(),
            grant_days="7",
            priority="",
        )
        page = await follow(admin, r)
        assert "Promotion code SPRING-26 created: 15 credits, 2 uses." in page
        assert 'data-code="SPRING-26"' in page
        assert "0 / 2" in page
        redeemed = await service.client.post("/api/wallet/redeem", json={"code": "spring-26"}, headers=ann)
        assert redeemed.status_code == 200, redeemed.text
        assert redeemed.json()["grant"]["amount"] == 15
        page = text(await admin.get("/admin/credits"))
        assert "1 / 2" in page
        assert "Promotion code SPRING-26" in page  # its grant in the recent grants

        page = await follow(
            admin,
            await submit(admin, "/admin/credits/promo-codes", code="SPRING-26", amount="1", max_uses="1"),
        )
        assert "The promotion code was not created: A promotion code with this text exists already." in page
        for form, message in (
            ({"code": "a b", "amount": "1", "max_uses": "1"}, "Code: String should match pattern"),
            ({"code": "GOOD1", "amount": "1", "max_uses": "x"}, "Uses must be a whole number."),
            ({"code": "GOOD1", "amount": "1", "max_uses": "1", "grant_days": "0"}, "Grant validity: Input"),
        ):
            page = await follow(admin, await submit(admin, "/admin/credits/promo-codes", **form))
            assert "The promotion code was not created: " in page
            assert message in page, form
        assert 'data-code="GOOD1"' not in page


async def test_refund_a_job_through_the_form(service: Service) -> None:
    ann = await service.user()
    job = (await submit_job(service, ann)).json()
    assert (await wait_for_job(service.client, ann, job["id"]))["status"] == "succeeded"
    async with browser(service, await new_admin(service)) as admin:
        back = "/admin/users?search=x"
        r = await submit(admin, "/admin/refunds", job_id=f" {job['id']} ", note="bad output", back=back)
        assert r.headers["location"] == back
        page = await follow(admin, r)
        assert f"Refunded 3 credits of job {job['id']}: the owner's balance is 100, available 100." in page
        assert await wallet(service, ann) == {"balance": 100, "held": 0, "available": 100}
        entries = (await service.client.get("/api/wallet/transactions", headers=ann)).json()["items"]
        assert entries[0]["note"].endswith(": bad output")

        page = await follow(admin, await submit(admin, "/admin/refunds", job_id=job["id"]))
        assert "Nothing was refunded: Only a job that was charged" in page
        page = await follow(admin, await submit(admin, "/admin/refunds", job_id="not-a-job"))
        assert "Nothing was refunded: give the job's id" in page
        page = await follow(admin, await submit(admin, "/admin/refunds", job_id=str(uuid.uuid4())))
        assert "Nothing was refunded: There is no job with this id." in page
        r = await submit(admin, "/admin/refunds", job_id=job["id"], back="https://evil.example/")
        assert r.headers["location"] == "/admin/credits"
    assert await wallet(service, ann) == {"balance": 100, "held": 0, "available": 100}
