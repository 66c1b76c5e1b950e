from __future__ import annotations

import asyncio

from tests.conftest import Service
from tests.fixtures.api import ledger_totals


async def test_refill_and_history_newest_first(service: Service) -> None:
    headers = await service.user()
    for amount in (10, 20, 30):
        r = await service.client.post("/api/wallet/refill", json={"amount": amount}, headers=headers)
        assert r.status_code == 200, r.text
    body = r.json()
    assert body["wallet"] == {"balance": 160, "held": 0, "available": 160}
    assert body["entry"]["type"] == "topup"
    assert body["entry"]["balance_after"] == 160

    page = (await service.client.get("/api/wallet/transactions?limit=2", headers=headers)).json()
    assert page["total"] == 4
    assert [e["amount"] for e in page["items"]] == [30, 20]
    page2 = (await service.client.get("/api/wallet/transactions?limit=2&offset=2", headers=headers)).json()
    assert [(e["type"], e["amount"], e["balance_after"]) for e in page2["items"]] == [
        ("topup", 10, 110),
        ("signup_bonus", 100, 100),
    ]


async def test_refill_rejects_bad_amounts_without_ledger_change(service: Service) -> None:
    headers = await service.user()
    for payload, code in [
        ({"amount": 0}, "validation_error"),
        ({"amount": -5}, "validation_error"),
        ({"amount": "ten"}, "validation_error"),
        ({"amount": 10.5}, "validation_error"),
        ({}, "validation_error"),
        ({"amount": service.settings.max_refill_amount + 1}, "refill_limit_exceeded"),
    ]:
        r = await service.client.post("/api/wallet/refill", json=payload, headers=headers)
        assert r.status_code == 422, (payload, r.text)
        assert r.json()["error"]["code"] == code
    assert await ledger_totals(service, headers) == (100, 0, 1)


async def test_refill_idempotency_key(service: Service) -> None:
    headers = await service.user()
    key = {"Idempotency-Key": "refill-1"}
    first = await service.client.post("/api/wallet/refill", json={"amount": 25}, headers=headers | key)
    again = await service.client.post("/api/wallet/refill", json={"amount": 25}, headers=headers | key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await service.client.post("/api/wallet/refill", json={"amount": 26}, headers=headers | key)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    wallet = (await service.client.get("/api/wallet", headers=headers)).json()
    assert wallet["balance"] == 125


async def test_refill_idempotency_under_concurrent_replays(service: Service) -> None:
    headers = await service.user()
    key = {"Idempotency-Key": "same-payment"}
    responses = await asyncio.gather(
        *[
            service.client.post("/api/wallet/refill", json={"amount": 7}, headers=headers | key)
            for _ in range(10)
        ]
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["entry"]["id"] for r in responses}) == 1
    assert await ledger_totals(service, headers) == (107, 0, 2)


async def test_wallets_are_private(service: Service) -> None:
    alice, bob = await service.user(), await service.user()
    await service.client.post("/api/wallet/refill", json={"amount": 50}, headers=alice)
    assert (await service.client.get("/api/wallet", headers=bob)).json()["balance"] == 100
    assert (await service.client.get("/api/wallet/transactions", headers=bob)).json()["total"] == 1
