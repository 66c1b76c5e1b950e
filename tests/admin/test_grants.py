"""Administrators grant bonus credits with an expiry (to a user, to everyone) and void unspent grants."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mlservice.users.tables import User
from mlservice.wallet import usecases as wallet_usecases
from mlservice.wallet.tables import CreditGrant
from tests.conftest import Service
from tests.fixtures.api import submit, wallet
from tests.fixtures.grants import check_grants
from tests.fixtures.history import user_id


async def test_a_grant_with_an_expiry_to_one_user_and_its_void(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin, ann = await service.admin(), await service.user()
        expires = datetime.now(UTC) + timedelta(days=3)
        body = {
            "user_id": str(await user_id(service, ann)),
            "amount": 25,
            "note": "sorry for the outage",
            "expires_at": expires.isoformat(),
            "priority": 10,
        }
        r = await service.client.post("/api/admin/grants", json=body, headers=admin)
        assert r.status_code == 201, r.text
        assert r.json()["count"] == 1
        made = r.json()["grants"][0]
        assert (made["kind"], made["source"], made["remaining"], made["priority"]) == (
            "bonus",
            "admin",
            25,
            10,
        )
        assert made["created_by"].startswith("admin")
        mine = (await service.client.get("/api/wallet", headers=ann)).json()
        assert (mine["available"], mine["bonus"], mine["expiring"]) == (125, 125, 25)
        assert mine["grants"][0]["id"] == made["id"]  # priority 10: spent first

        r = await service.client.post(f"/api/admin/grants/{made['id']}/void", headers=admin)
        assert r.status_code == 200, r.text
        assert (r.json()["remaining"], r.json()["voided_by"]) == (0, made["created_by"])
        assert await wallet(service, ann) == {"balance": 100, "held": 0, "available": 100}
        entries = (await service.client.get("/api/wallet/transactions", headers=ann)).json()["items"]
        assert (entries[0]["type"], entries[0]["amount"]) == ("void", -25)
        assert "voided by admin" in entries[0]["note"]
        again = await service.client.post(f"/api/admin/grants/{made['id']}/void", headers=admin)
        assert (again.status_code, again.json()["error"]["code"]) == (409, "grant_not_voidable")
        await check_grants(service.db, await user_id(service, ann))


async def test_a_grant_that_was_drawn_on_cannot_be_voided(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin, ann = await service.admin(), await service.user()
        body = {"user_id": str(await user_id(service, ann)), "amount": 5, "note": "n", "priority": 0}
        made = (await service.client.post("/api/admin/grants", json=body, headers=admin)).json()["grants"][0]
        assert (await submit(service, ann)).status_code == 201  # drawn on first: priority 0
        r = await service.client.post(f"/api/admin/grants/{made['id']}/void", headers=admin)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "grant_not_voidable")
        assert (await service.client.post("/api/admin/grants/999999/void", headers=admin)).status_code == 404


async def test_a_grant_to_everyone_and_only_administrators_grant(service: Service) -> None:
    admin, ann, bob = await service.admin(), await service.user(), await service.user()
    r = await service.client.post("/api/admin/grants", json={"amount": 7, "note": "n"}, headers=ann)
    assert r.status_code == 403
    r = await service.client.post("/api/admin/grants", json={"amount": 7, "note": "launch"}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["count"] == 3  # the administrator's account too
    for headers in (ann, bob):
        assert await wallet(service, headers) == {"balance": 107, "held": 0, "available": 107}
        await check_grants(service.db, await user_id(service, headers))


async def test_a_grant_to_everyone_commits_in_batches_and_lists_the_first(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = await service.admin()
    users = [await service.user() for _ in range(4)]
    async with service.db.session(write=True) as session:
        gone = await session.get(User, await user_id(service, users[0]))
        assert gone is not None
        gone.is_active = False  # no grant for a deactivated account
    monkeypatch.setattr(wallet_usecases, "GRANT_BATCH", 2)
    monkeypatch.setattr(wallet_usecases, "GRANTS_LISTED", 3)
    r = await service.client.post("/api/admin/grants", json={"amount": 4, "note": "batched"}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.json()["count"] == 4  # the administrator and three active users, in two batches
    listed = r.json()["grants"]
    assert len(listed) == 3
    assert len({g["id"] for g in listed}) == 3
    async with service.db.session() as session:
        made = list(await session.scalars(select(CreditGrant).where(CreditGrant.note == "batched")))
    assert len(made) == 4
    assert await user_id(service, users[0]) not in {g.user_id for g in made}
    for headers in users[1:]:
        assert (await wallet(service, headers))["available"] == 104
        await check_grants(service.db, await user_id(service, headers))
