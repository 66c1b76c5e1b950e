"""Long polling: ``GET /api/jobs/{id}?wait=N`` answers as soon as the job finishes."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from tests.conftest import Service
from tests.fixtures.api import submit


async def test_wait_answers_when_the_job_finishes(service: Service) -> None:
    headers = await service.user()
    job = (await submit(service, headers, "slow", params='{"sleep_ms": 400}')).json()
    started = time.perf_counter()
    r = await service.client.get(f"/api/jobs/{job['id']}", params={"wait": 30}, headers=headers)
    elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded"
    assert r.json()["output"]["echo"] == "SLOW"
    assert 0.2 < elapsed < 10  # woken by the finish, not by the end of the wait

    # A finished job answers at once; wait=0 is a plain read.
    started = time.perf_counter()
    again = await service.client.get(f"/api/jobs/{job['id']}", params={"wait": 30}, headers=headers)
    assert again.json()["status"] == "succeeded"
    assert time.perf_counter() - started < 1


async def test_wait_times_out_with_the_job_as_it_is(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job = (await submit(service, headers)).json()
        started = time.perf_counter()
        r = await service.client.get(f"/api/jobs/{job['id']}", params={"wait": 0.5}, headers=headers)
        assert r.json()["status"] == "queued"
        assert 0.4 < time.perf_counter() - started < 5


async def test_cancel_wakes_a_waiter(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job = (await submit(service, headers)).json()
        waiting = asyncio.create_task(
            service.client.get(f"/api/jobs/{job['id']}", params={"wait": 30}, headers=headers)
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        started = time.perf_counter()
        assert (
            await service.client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
        ).status_code == 200
        r = await asyncio.wait_for(waiting, 10)
        assert r.json()["status"] == "canceled"
        assert time.perf_counter() - started < 5


async def test_wait_bounds_and_privacy(service: Service) -> None:
    headers = await service.user()
    job = (await submit(service, headers)).json()
    too_long = await service.client.get(f"/api/jobs/{job['id']}", params={"wait": 61}, headers=headers)
    assert too_long.status_code == 422
    other = await service.user()
    foreign = await service.client.get(f"/api/jobs/{job['id']}", params={"wait": 5}, headers=other)
    assert foreign.status_code == 404
    missing = await service.client.get(f"/api/jobs/{uuid.uuid4()}", params={"wait": 5}, headers=headers)
    assert missing.status_code == 404
