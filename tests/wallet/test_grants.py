"""Credit grants: the spending order, holds that span grants, captures, releases and refunds that
move exactly the hold's draws, expiry that never takes held credit, the wallet's breakdown, and
concurrent submits against bonus and paid grants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from mlservice.wallet import granting, grants
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import GrantKind
from tests.conftest import Service
from tests.fixtures.api import submit, wallet
from tests.fixtures.grants import check_grants

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture
async def service(service_factory: Any) -> AsyncIterator[Service]:
    """No workers: the tests capture and release the holds themselves."""
    async with service_factory(workers=0) as svc:
        yield svc


def test_spending_order_is_priority_then_expiry_then_bonus_first() -> None:
    def g(id_: int, kind: str, priority: int = 50, expires: int | None = None, free: int = 10) -> Any:
        at = None if expires is None else T0 + timedelta(days=expires)
        return SimpleNamespace(id=id_, kind=kind, priority=priority, expires_at=at, remaining=free, held=0)

    pool = [
        g(1, GrantKind.paid),
        g(2, GrantKind.bonus),
        g(3, GrantKind.paid, expires=5),
        g(4, GrantKind.bonus, expires=9),
        g(5, GrantKind.paid, priority=10),
        g(6, GrantKind.bonus, expires=-1),  # expired: never drawn on
    ]
    assert grants.plan(pool, 55, T0) == [(5, 10), (3, 10), (4, 10), (2, 10), (1, 10)]
    assert grants.plan(pool, 12, T0) == [(5, 10), (3, 2)]
    assert sum(n for _, n in grants.plan(pool, 80, T0)) == 50  # what the unexpired grants have


async def _user_id(service: Service, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID((await service.client.get("/api/users/me", headers=headers)).json()["id"])


async def _set_price(service: Service, price: int) -> None:
    admin = await service.admin()
    r = await service.client.patch("/api/admin/models/test-echo", json={"price": price}, headers=admin)
    assert r.status_code == 200, r.text


async def _grants_of(service: Service, headers: dict[str, str]) -> list[tuple[str, int, int]]:
    body = (await service.client.get("/api/wallet", headers=headers)).json()
    return [(g["kind"], g["remaining"], g["held"]) for g in body["grants"]]


async def test_a_hold_spans_grants_and_its_capture_charges_exactly_those(service: Service) -> None:
    headers = await service.user()
    user_id = await _user_id(service, headers)
    assert (
        await service.client.post("/api/wallet/refill", json={"amount": 50}, headers=headers)
    ).status_code == 200
    body = (await service.client.get("/api/wallet", headers=headers)).json()
    assert {k: body[k] for k in ("balance", "held", "available", "paid", "bonus", "expiring")} == {
        "balance": 150,
        "held": 0,
        "available": 150,
        "paid": 50,
        "bonus": 100,
        "expiring": 0,
    }
    assert [(g["kind"], g["source"], g["expires_at"]) for g in body["grants"]] == [
        ("bonus", "signup_bonus", None),
        ("paid", "topup", None),
    ]
    await _set_price(service, 120)
    r = await submit(service, headers)
    assert r.status_code == 201, r.text
    job_id = uuid.UUID(r.json()["id"])
    assert await _grants_of(service, headers) == [("bonus", 100, 100), ("paid", 50, 20)]
    await check_grants(service.db, user_id)
    async with service.db.session(write=True) as session:
        assert await wallet_service.capture_hold(session, job_id) is not None
    assert await _grants_of(service, headers) == [("paid", 30, 0)]
    assert await wallet(service, headers) == {"balance": 30, "held": 0, "available": 30}
    await check_grants(service.db, user_id)
    # A refund goes back to the grants the charge came from, once.
    async with service.db.session(write=True) as session:
        assert await wallet_service.refund(session, job_id) is not None
    async with service.db.session(write=True) as session:
        assert await wallet_service.refund(session, job_id) is None
    assert await _grants_of(service, headers) == [("bonus", 100, 0), ("paid", 50, 0)]
    await check_grants(service.db, user_id)


async def test_a_release_returns_the_draws_to_their_grants(service: Service) -> None:
    headers = await service.user()
    user_id = await _user_id(service, headers)
    await service.client.post("/api/wallet/refill", json={"amount": 10}, headers=headers)
    await _set_price(service, 105)
    r = await submit(service, headers)
    assert r.status_code == 201, r.text
    assert await _grants_of(service, headers) == [("bonus", 100, 100), ("paid", 10, 5)]
    assert (
        await service.client.post(f"/api/jobs/{r.json()['id']}/cancel", headers=headers)
    ).status_code == 200
    assert await _grants_of(service, headers) == [("bonus", 100, 0), ("paid", 10, 0)]
    await check_grants(service.db, user_id)


async def test_expiry_takes_free_credit_only_and_held_credit_when_it_comes_back(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(grants, "now", lambda: clock[0])
    headers = await service.user()
    user_id = await _user_id(service, headers)
    async with service.db.session(write=True) as session:
        # Spent first (priority 10): the job's hold draws on it.
        await granting.grant(
            session, user_id, 40, expires_at=clock[0] + timedelta(hours=1), priority=10, note="promo"
        )
    body = (await service.client.get("/api/wallet", headers=headers)).json()
    assert (body["bonus"], body["expiring"], body["available"]) == (140, 40, 140)
    await _set_price(service, 30)
    first = await submit(service, headers, "one")
    second = await submit(service, headers, "two")
    assert first.status_code == second.status_code == 201
    assert await _grants_of(service, headers) == [("bonus", 40, 40), ("bonus", 100, 20)]

    clock[0] += timedelta(hours=2)
    # Not swept yet: new holds already pass the expired grant by.
    assert (await submit(service, headers, "three")).status_code == 201
    assert await _grants_of(service, headers) == [("bonus", 40, 40), ("bonus", 100, 50)]
    async with service.db.session(write=True) as session:
        assert await wallet_service.expire_due(session, clock[0]) == 0  # all of it is held
    await check_grants(service.db, user_id, clock[0])

    job_one, job_two = (uuid.UUID(r.json()["id"]) for r in (first, second))
    async with service.db.session(write=True) as session:
        await wallet_service.capture_hold(session, job_one)  # charged from the expired grant
        await wallet_service.release_hold(session, job_two)  # comes back to it, and expires at once
    await check_grants(service.db, user_id, clock[0])
    assert await _grants_of(service, headers) == [("bonus", 100, 30)]
    assert await wallet(service, headers) == {"balance": 100, "held": 30, "available": 70}
    r = await service.client.get("/api/wallet/transactions?limit=20", headers=headers)
    assert [e["type"] for e in r.json()["items"]][:3] == ["expiry", "release", "capture"]


async def test_free_credit_of_an_expired_grant_is_removed_with_its_own_entry(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [datetime.now(UTC)]
    monkeypatch.setattr(grants, "now", lambda: clock[0])
    headers = await service.user()
    user_id = await _user_id(service, headers)
    async with service.db.session(write=True) as session:
        await granting.grant(session, user_id, 25, expires_at=clock[0] + timedelta(days=3))
        await granting.grant(session, user_id, 5, expires_at=clock[0] + timedelta(days=30))
    body = (await service.client.get("/api/wallet", headers=headers)).json()
    assert (body["available"], body["expiring"]) == (130, 25)
    clock[0] += timedelta(days=4)
    # The wallet's read removes what expired before it answers: available = paid + bonus.
    body = (await service.client.get("/api/wallet", headers=headers)).json()
    assert (body["balance"], body["available"], body["bonus"], body["expiring"]) == (105, 105, 105, 0)
    await check_grants(service.db, user_id, clock[0])
    r = await service.client.get("/api/wallet/transactions?limit=1", headers=headers)
    assert (r.json()["items"][0]["type"], r.json()["items"][0]["amount"]) == ("expiry", -25)


async def test_200_concurrent_submits_against_bonus_and_paid_grants_never_overdraw(
    service_factory: Any,
) -> None:
    async with service_factory(workers=0, rate_limits_enabled=False) as service:
        headers = await service.user()
        user_id = await _user_id(service, headers)
        await service.client.post("/api/wallet/refill", json={"amount": 50}, headers=headers)
        async with service.db.session(write=True) as session:
            await granting.grant(
                session, user_id, 37, expires_at=datetime.now(UTC) + timedelta(days=1), note="promo"
            )
        await _set_price(service, 3)
        responses = await asyncio.gather(*(submit(service, headers, f"{i}") for i in range(200)))
        codes = [r.status_code for r in responses]
        assert set(codes) <= {201, 402}, codes
        assert codes.count(201) == 187 // 3
        assert await wallet(service, headers) == {"balance": 187, "held": 186, "available": 1}
        drawn = await check_grants(service.db, user_id)
        assert [(g.kind, g.remaining, g.held) for g in drawn] == [
            ("bonus", 100, 100),
            ("paid", 50, 49),
            ("bonus", 37, 37),
        ]
