"""The web wallet's credits: paid and bonus, what expires soon, each grant with its source and
expiry, and promotion codes redeemed from the page."""

from __future__ import annotations

import re

from mlservice.wallet import breakdown
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import submit, wallet
from tests.fixtures.web import browser, csrf
from tests.web.test_pages import new_user, text


async def test_the_wallet_shows_grants_and_redeems_a_promotion_code(service: Service) -> None:
    email, headers, _ = await new_user(service)
    admin = await service.admin()
    r = await service.client.post(
        "/api/admin/promo-codes",
        json={"code": "WINTER-26", "amount": 25, "max_uses": 10, "grant_days": 5},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    async with browser(service, email) as client:
        page = text(await client.get("/wallet"))
        assert "Welcome bonus" in page
        assert "100</strong> bonus credits available" in page
        assert "expire within 7 days" not in page

        r = await client.post("/wallet/redeem", data={"code": "WINTER-26", "csrf_token": csrf(client)})
        assert r.status_code == 303, r.text
        page = text(await client.get("/wallet"))
        assert "Added 25 bonus credits, until" in page
        assert "Promotion code" in page
        assert "125</strong> bonus credits available" in page
        assert '<strong data-testid="expiring">25</strong> of them expire within 7 days' in page

        # Once per user; an unknown code; a forged form: refused on the page, nothing granted.
        for code, says in (("WINTER-26", "already"), ("NOPE-0", "")):
            r = await client.post("/wallet/redeem", data={"code": code, "csrf_token": csrf(client)})
            assert r.status_code == 400, (code, r.status_code)
            assert 'role="alert" id="redeem-error"' in r.text
            assert says in text(r).lower()
        r = await client.post("/wallet/redeem", data={"code": "WINTER-26", "csrf_token": "forged"})
        assert r.status_code == 403
    assert (await wallet(service, headers))["available"] == 125


async def test_each_transaction_shows_the_grants_it_drew_on(service: Service) -> None:
    email, headers, _ = await new_user(service)
    r = await service.client.post(
        "/api/wallet/refill", json={"amount": 1}, headers=headers | {"Idempotency-Key": "g-1"}
    )
    assert r.status_code == 200, r.text
    # A price above the bonus left: the job draws on the welcome bonus and the top-up both.
    admin = await service.admin()
    r = await service.client.patch("/api/admin/models/test-echo", json={"price": 101}, headers=admin)
    assert r.status_code == 200, r.text
    job = (await submit(service, headers, "both")).json()["id"]
    await wait_for_job(service.client, headers, job)
    async with browser(service, email) as client:
        page = text(await client.get("/wallet"))
    held = re.search(r'data-entry-type="hold".*?data-testid="entry-grants">(.*?)</span>', page, re.S)
    charged = re.search(r'data-entry-type="capture".*?data-testid="entry-grants">(.*?)</span>', page, re.S)
    assert held is not None
    assert charged is not None
    assert " ".join(held[1].split()) == "held from Welcome bonus 100, Top-up 1"
    assert " ".join(charged[1].split()) == "from Welcome bonus 100, Top-up 1"


async def test_the_balance_over_time_stacks_bonus_and_paid_credits(service: Service) -> None:
    email, headers, user_id = await new_user(service)
    r = await service.client.post(
        "/api/wallet/refill", json={"amount": 40}, headers=headers | {"Idempotency-Key": "h-1"}
    )
    assert r.status_code == 200, r.text
    job = (await submit(service, headers, "spend")).json()["id"]
    await wait_for_job(service.client, headers, job)
    async with service.db.session() as session:
        history = await breakdown.balance_history(session, user_id, days=3)
    assert len(history) == 3
    assert [(d.paid, d.bonus) for d in history[:2]] == [(0, 0), (0, 0)]  # before the account
    assert (history[-1].paid, history[-1].bonus) == (40, 97)  # the job drew on the bonus first
    async with browser(service, email) as client:
        page = text(await client.get("/wallet"))
    chart = page[page.index('data-testid="balance-chart"') :]
    assert "Balance over the last 30 days" in chart
    assert "Bonus 97 of 137" in chart  # the last day's stack, in words
    assert "Paid 40 of 137" in chart


async def test_low_balance_alerts_are_set_from_the_wallet(service: Service) -> None:
    email, headers, _ = await new_user(service)
    async with browser(service, email) as client:
        page = (await client.get("/wallet")).text
        assert 'value="default" checked' in page
        assert 'data-testid="alert-thresholds"' in page

        form = {"mode": "own", "thresholds": "120, 20", "telegram": "1", "csrf_token": csrf(client)}
        r = await client.post("/wallet/alerts", data=form)
        assert r.status_code == 303, r.text
        page = (await client.get("/wallet")).text
        assert "Your low-balance alerts are saved." in page
        assert '<strong data-testid="alert-thresholds">120, 20</strong>' in page
        assert 'value="own" checked' in page

        # Wrong numbers and a webhook the service refuses: said on the page, nothing saved.
        for bad, says in (
            ({"mode": "own", "thresholds": "ten"}, "whole numbers"),
            ({"mode": "own", "thresholds": "0"}, "whole numbers"),
            ({"mode": "own", "thresholds": "1,2,3,4,5,6"}, "up to 5"),
            ({"mode": "maybe"}, "choose"),
            ({"mode": "default", "webhook_url": "http://127.0.0.1/x"}, "public address"),
        ):
            r = await client.post("/wallet/alerts", data=bad | {"csrf_token": csrf(client)})
            assert r.status_code == 400, (bad, r.status_code)
            assert 'role="alert" id="alerts-error"' in r.text
            assert says in text(r).lower(), (bad, text(r))
        r = await client.post("/wallet/alerts", data={"mode": "off", "csrf_token": "forged"})
        assert r.status_code == 403

        r = await client.post("/wallet/alerts", data={"mode": "off", "csrf_token": csrf(client)})
        assert r.status_code == 303
    body = (await service.client.get("/api/wallet/alerts", headers=headers)).json()
    assert body["thresholds"] == body["effective"] == []
    assert body["telegram"] is False  # the box was not ticked
