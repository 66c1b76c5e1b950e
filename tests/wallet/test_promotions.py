"""Promotion codes: total uses, one per user, the code's expiry, and the grant each redemption makes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fixtures.api import wallet
from tests.fixtures.grants import check_grants
from tests.fixtures.history import user_id


async def test_a_code_is_redeemed_once_per_user_up_to_its_total_uses(service_factory: Any) -> None:
    async with service_factory(workers=0, rate_limits_enabled=False) as service:
        admin = await service.admin()
        body = {"code": "launch-2030", "amount": 15, "max_uses": 3, "grant_days": 10, "priority": 20}
        r = await service.client.post("/api/admin/promo-codes", json=body, headers=admin)
        assert r.status_code == 201, r.text
        assert (r.json()["code"], r.json()["uses"], r.json()["created_by"][:5]) == ("LAUNCH-2030", 0, "admin")
        again = await service.client.post("/api/admin/promo-codes", json=body, headers=admin)
        assert (again.status_code, again.json()["error"]["code"]) == (409, "promo_code_taken")

        ann = await service.user()
        r = await service.client.post("/api/wallet/redeem", json={"code": " launch-2030 "}, headers=ann)
        assert r.status_code == 200, r.text
        made = r.json()["grant"]
        assert (made["kind"], made["source"], made["remaining"], made["priority"]) == (
            "bonus",
            "promo",
            15,
            20,
        )
        assert made["expires_at"] is not None
        assert r.json()["wallet"] == {"balance": 115, "held": 0, "available": 115}
        twice = await service.client.post("/api/wallet/redeem", json={"code": "LAUNCH-2030"}, headers=ann)
        assert (twice.status_code, twice.json()["error"]["code"]) == (409, "promo_code_already_redeemed")
        await check_grants(service.db, await user_id(service, ann))

        # Five more users at once: two uses are left.
        others = [await service.user() for _ in range(5)]
        answers = await asyncio.gather(
            *(
                service.client.post("/api/wallet/redeem", json={"code": "LAUNCH-2030"}, headers=h)
                for h in others
            )
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 200, 409, 409, 409], [a.text for a in answers]
        assert {a.json()["error"]["code"] for a in answers if a.status_code == 409} == {
            "promo_code_unavailable"
        }
        balances = sorted([(await wallet(service, h))["balance"] for h in others])
        assert balances == [100, 100, 100, 115, 115]

        missing = await service.client.post("/api/wallet/redeem", json={"code": "NOPE"}, headers=ann)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "promo_code_not_found")


async def test_an_expired_code_grants_nothing(service_factory: Any) -> None:
    async with service_factory(workers=0, rate_limits_enabled=False) as service:
        admin, ann = await service.admin(), await service.user()
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        body = {"code": "OLD1", "amount": 5, "max_uses": 10, "redeem_until": past}
        assert (
            await service.client.post("/api/admin/promo-codes", json=body, headers=admin)
        ).status_code == 201
        r = await service.client.post("/api/wallet/redeem", json={"code": "old1"}, headers=ann)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "promo_code_unavailable")
        assert await wallet(service, ann) == {"balance": 100, "held": 0, "available": 100}
        user = await service.client.post("/api/admin/promo-codes", json={**body, "code": "X12"}, headers=ann)
        assert user.status_code == 403
