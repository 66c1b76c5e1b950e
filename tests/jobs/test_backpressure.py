"""Backpressure: a user's cap on unfinished jobs (429) and a model's queue cap (503), each refused
before anything is held, with Retry-After, and recorded in the request history."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from mlservice.catalog.tables import CatalogModel
from mlservice.history.tables import PredictionRequest
from mlservice.jobs.backpressure import QueueCaps
from mlservice.jobs.errors import ModelQueueFull
from tests.conftest import Service
from tests.fixtures.api import ledger_totals, submit, wallet
from tests.replicate.conftest import create

PRICE = 3  # test-echo's


async def refused_codes(service: Service) -> list[tuple[int, str | None]]:
    async with service.db.session() as session:
        rows = (await session.scalars(select(PredictionRequest).order_by(PredictionRequest.id))).all()
        return [(row.http_status, row.error_code) for row in rows if row.http_status != 201]


async def test_a_user_past_the_cap_on_unfinished_jobs_is_refused_and_charged_nothing(
    service_factory: Any,
) -> None:
    async with service_factory(workers=0, max_unfinished_jobs_per_user=3) as service:
        headers, other = await service.user(), await service.user()
        accepted = [await submit(service, headers, f"job {i}") for i in range(3)]
        assert [r.status_code for r in accepted] == [201, 201, 201]
        before = await ledger_totals(service, headers)

        r = await submit(service, headers, "one too many")
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        error = r.json()["error"]
        assert (error["code"], error["details"]) == ("too_many_unfinished_jobs", {"limit": 3})
        assert await wallet(service, headers) == {"balance": 100, "held": 3 * PRICE, "available": 100 - 9}
        assert await ledger_totals(service, headers) == before
        assert await refused_codes(service) == [(429, "too_many_unfinished_jobs")]

        # Someone else's jobs are not counted against them.
        assert (await submit(service, other)).status_code == 201
        # A finished (here: canceled) job no longer counts.
        r = await service.client.post(f"/api/jobs/{accepted[0].json()['id']}/cancel", headers=headers)
        assert r.status_code == 200, r.text
        assert (await submit(service, headers, "room again")).status_code == 201
        assert (await submit(service, headers, "full again")).status_code == 429


async def test_the_replicate_api_refuses_past_the_cap_too(service_factory: Any) -> None:
    async with service_factory(workers=0, max_unfinished_jobs_per_user=1) as service:
        headers = await service.user()
        assert (await create(service, headers)).status_code == 201
        r = await create(service, headers)
        assert r.status_code == 429, r.text
        assert "Retry-After" in r.headers
        assert "too_many_unfinished_jobs" in r.text


async def test_no_cap_when_it_is_zero(service_factory: Any) -> None:
    async with service_factory(
        workers=0, max_unfinished_jobs_per_user=0, max_queued_jobs_per_model=0
    ) as service:
        headers = await service.user()
        responses = [await submit(service, headers, f"job {i}") for i in range(6)]
        assert [r.status_code for r in responses] == [201] * 6


async def test_concurrent_submits_of_one_user_hold_the_money_exactly(service_factory: Any) -> None:
    """The cap is backpressure (racing submits may pass it together); the money stays exact."""
    async with service_factory(workers=0, max_unfinished_jobs_per_user=4) as service:
        headers = await service.user()
        responses = await asyncio.gather(*(submit(service, headers, f"job {i}") for i in range(12)))
        accepted = sum(r.status_code == 201 for r in responses)
        assert 4 <= accepted <= 12
        assert {r.status_code for r in responses} <= {201, 429}
        assert await wallet(service, headers) == {
            "balance": 100,
            "held": accepted * PRICE,
            "available": 100 - accepted * PRICE,
        }
        assert await ledger_totals(service, headers) == (100, accepted * PRICE, 1 + accepted)
        # Once they are in, the next one is refused.
        assert (await submit(service, headers, "after the race")).status_code == 429


async def test_a_full_model_queue_is_503_for_everyone_and_charges_nothing(service_factory: Any) -> None:
    async with service_factory(workers=0, max_queued_jobs_per_model=2) as service:
        first, second, admin = await service.user(), await service.user(), await service.admin()
        assert [(await submit(service, first, f"job {i}")).status_code for i in range(2)] == [201, 201]

        r = await submit(service, second)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        error = r.json()["error"]
        assert (error["code"], error["details"]) == ("model_queue_full", {"limit": 2})
        assert await wallet(service, second) == {"balance": 100, "held": 0, "available": 100}
        assert await ledger_totals(service, second) == (100, 0, 1)
        assert await refused_codes(service) == [(503, "model_queue_full")]

        # The catalog's own cap for the model wins over the default; null goes back to it; 0 is none.
        r = await service.client.patch(
            "/api/admin/models/test-echo", json={"max_queued_jobs": 3}, headers=admin
        )
        assert r.status_code == 200, r.text
        assert (r.json()["max_queued_jobs"], r.json()["queue_cap"]) == (3, 3)
        assert (await submit(service, second)).status_code == 201
        assert (await submit(service, second)).status_code == 503
        r = await service.client.patch(
            "/api/admin/models/test-echo", json={"max_queued_jobs": None}, headers=admin
        )
        assert (r.json()["max_queued_jobs"], r.json()["queue_cap"]) == (None, 2)
        assert (await submit(service, second)).status_code == 503
        r = await service.client.patch(
            "/api/admin/models/test-echo", json={"max_queued_jobs": 0}, headers=admin
        )
        assert r.json()["queue_cap"] == 0
        assert (await submit(service, second)).status_code == 201
        # A price change leaves the cap as it is.
        r = await service.client.patch("/api/admin/models/test-echo", json={"price": 4}, headers=admin)
        assert r.json()["max_queued_jobs"] == 0


async def test_a_negative_queue_cap_is_refused(service: Service) -> None:
    admin = await service.admin()
    r = await service.client.patch("/api/admin/models/test-echo", json={"max_queued_jobs": -1}, headers=admin)
    assert r.status_code == 422


async def test_the_queue_depth_is_read_from_the_database(service_factory: Any) -> None:
    """What other processes queued counts: a cap of another process reads the queue itself."""
    async with service_factory(workers=0) as service:
        headers = await service.user()
        async with service.db.session() as session:
            model = await session.get(CatalogModel, "test-echo")
        assert model is not None
        elsewhere = QueueCaps(service.db, default_cap=2, ttl_seconds=0)
        await elsewhere.check(model)
        for i in range(2):
            assert (await submit(service, headers, f"job {i}")).status_code == 201
        with pytest.raises(ModelQueueFull):
            await elsewhere.check(model)
        assert (await elsewhere.queued())["test-echo"] == 2
        # Read at most every ttl_seconds, by one read for all concurrent checks.
        cached = QueueCaps(service.db, default_cap=5, ttl_seconds=60)
        await asyncio.gather(*(cached.check(model) for _ in range(10)))
        assert (await cached.queued())["test-echo"] == 2
        assert (await submit(service, headers, "third")).status_code == 201
        assert (await cached.queued())["test-echo"] == 2  # not read again yet
        cached.forget()
        assert (await cached.queued())["test-echo"] == 3
