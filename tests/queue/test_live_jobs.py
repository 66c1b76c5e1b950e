"""Live jobs across processes: an API process cancels a job that a ``mlservice worker`` process
is running (over RabbitMQ and PostgreSQL), and the worker stops its predictor at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.conftest import Service
from tests.fixtures.api import wallet
from tests.fixtures.predictors import SteppingEcho
from tests.queue.test_reliability import Spawn, spawn_worker  # noqa: F401

FINISHED = {"succeeded", "failed", "canceled", "aborted"}


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("API and worker processes share a PostgreSQL database")


@asynccontextmanager
async def api(service_factory: Any, worker_env: dict[str, str]) -> AsyncIterator[Service]:
    async with service_factory(
        [SteppingEcho], broker_url=worker_env["MLSERVICE_BROKER_URL"], workers=0
    ) as service:
        yield service


async def _until(
    service: Service, headers: dict[str, str], job_id: str, check: Any, within: float
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        job = (await service.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if check(job):
            return job  # type: ignore[no-any-return]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} is {job}")
        await asyncio.sleep(0.05)


async def _submit(service: Service, headers: dict[str, str], text: str, steps: int, **extra: str) -> str:
    r = await service.client.post(
        "/api/jobs",
        data={"model": SteppingEcho.slug, "text": text, "params": f'{{"steps": {steps}, "step_ms": 50}}'},
        headers=headers | extra,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_a_worker_process_stops_a_job_canceled_by_the_api(
    service_factory: Any,
    worker_env: dict[str, str],
    spawn_worker: Spawn,  # noqa: F811
) -> None:
    async with api(service_factory, worker_env) as service:
        await spawn_worker(SteppingEcho.slug, workers="1")
        headers = await service.user()
        # 400 steps of 50 ms: 20 s unless the cancel stops it.
        long_id = await _submit(service, headers, "long", 400)
        running = await _until(
            service, headers, long_id, lambda j: j["status"] == "running" and j["progress"], within=60
        )
        assert 0 < running["progress"]["fraction"] < 1
        r = await service.client.post(f"/api/jobs/{long_id}/cancel", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled"
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        # The worker runs one job at a time: the next one finishes soon only if the first stopped.
        started = asyncio.get_running_loop().time()
        next_id = await _submit(service, headers, "next", 2)
        done = await _until(service, headers, next_id, lambda j: j["status"] in FINISHED, within=30)
        assert done["status"] == "succeeded"
        assert asyncio.get_running_loop().time() - started < 8
        assert done["logs"].splitlines() == ["finished step 1 of 2", "finished step 2 of 2"]
        # The canceled job stays canceled, its result dropped, nothing charged for it.
        canceled = (await service.client.get(f"/api/jobs/{long_id}", headers=headers)).json()
        assert canceled["status"] == "canceled"
        assert canceled["output"] is None
        assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}


async def test_a_worker_process_cancels_a_running_job_at_its_deadline(
    service_factory: Any,
    worker_env: dict[str, str],
    spawn_worker: Spawn,  # noqa: F811
) -> None:
    async with api(service_factory, worker_env) as service:
        await spawn_worker(SteppingEcho.slug, workers="1")
        headers = await service.user()
        # Warm the worker up first, so that the deadline falls while the job runs.
        warm = await _submit(service, headers, "warm", 1)
        await _until(service, headers, warm, lambda j: j["status"] in FINISHED, within=60)
        job_id = await _submit(service, headers, "deadline", 400, **{"Cancel-After": "2s"})
        done = await _until(service, headers, job_id, lambda j: j["status"] in FINISHED, within=20)
        assert done["status"] == "canceled"
        assert done["started_at"] is not None
        assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}
