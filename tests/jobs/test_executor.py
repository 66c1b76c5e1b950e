"""The worker protocol: claims, leases, the sweeper, and holds that resolve exactly once."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from mlservice.jobs.attempts import Outcome
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.settle import record_outcome, sweep
from mlservice.jobs.tables import Job
from mlservice.predictors.base import PredictOutput
from mlservice.types import utcnow
from tests.conftest import wait_for_job
from tests.fixtures.api import ledger_totals, submit, wallet


def executor_of(service: Any) -> JobExecutor:
    components = service.app.state.components
    return JobExecutor(components.db, components.storage, components.pool, lease_seconds=60, max_attempts=2)


async def expire_lease(service: Any, job_id: uuid.UUID) -> None:
    async with service.db.session(write=True) as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_claim_is_exclusive_and_result_lands_once(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job_id = uuid.UUID((await submit(service, headers)).json()["id"])
        executor = executor_of(service)
        first = await executor.claim([job_id])
        assert [c.attempt for c in first] == [1]
        assert await executor.claim([job_id]) == []  # a duplicate delivery finds nothing to claim

        async with service.db.session(write=True) as session:
            assert await record_outcome(
                session, job_id, 1, Outcome(prediction=PredictOutput({"ok": True}), processing_ms=1.0)
            )
        async with service.db.session(write=True) as session:
            assert not await record_outcome(
                session, job_id, 1, Outcome(prediction=PredictOutput({"ok": False}))
            )
            assert not await record_outcome(session, job_id, 1, Outcome(error_code="x", error_message="y"))
        job = (await service.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        assert (job["status"], job["output"]) == ("succeeded", {"ok": True})
        assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}
        assert await ledger_totals(service, headers) == (97, 0, 3)


async def test_expired_lease_is_requeued_then_failed_after_attempts(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job_id = uuid.UUID((await submit(service, headers)).json()["id"])
        executor = executor_of(service)
        queue = service.app.state.components.queue

        await executor.claim([job_id])
        await expire_lease(service, job_id)
        async with service.db.session(write=True) as session:
            assert await sweep(session, service.app.state.components.publisher, max_attempts=2) == 1
        assert (await service.client.get(f"/api/jobs/{job_id}", headers=headers)).json()["status"] == "queued"
        assert [d.job_id for d in await queue.next_batch("test-echo", 1, 0)] == [job_id]  # republished

        second = await executor.claim([job_id])
        assert second[0].attempt == 2
        await expire_lease(service, job_id)
        async with service.db.session(write=True) as session:
            await sweep(session, service.app.state.components.publisher, max_attempts=2)
        job = (await service.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        assert job["status"] == "failed"
        assert job["error"]["code"] == "attempts_exhausted"
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}

        # The first attempt's worker wakes up late: its result must not land.
        async with service.db.session(write=True) as session:
            assert not await record_outcome(
                session, job_id, 1, Outcome(prediction=PredictOutput({"late": True}))
            )
        assert await ledger_totals(service, headers) == (100, 0, 3)


async def test_canceled_job_is_never_claimed(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job_id = (await submit(service, headers)).json()["id"]
        await service.client.post(f"/api/jobs/{job_id}/cancel", headers=headers)
        assert await executor_of(service).claim([uuid.UUID(job_id)]) == []


async def test_queued_jobs_are_resumed_after_restart(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job_id = (await submit(service, headers, "survive")).json()["id"]
    async with service_factory(workers=1) as service:
        job = await wait_for_job(service.client, headers, job_id)
        assert job["status"] == "succeeded"
        assert job["output"]["echo"] == "SURVIVE"
