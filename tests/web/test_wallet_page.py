"""The web wallet's credits: paid and bonus, what expires soon, each grant with its source and
expiry, and promotion codes redeemed from the page."""

from __future__ import annotations

from tests.conftest import Service
from tests.fixtures.api import wallet
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
