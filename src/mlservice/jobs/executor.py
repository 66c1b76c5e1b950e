"""Runs jobs: claim → predict → commit result and capture, the protocol every worker follows.

A claim is a guarded UPDATE (``queued → running``) that also counts the attempt and sets a lease;
the result is written only if the job is still ``running`` with that attempt number, together
with the capture of its hold. A duplicate delivery therefore finds nothing to claim, and a worker
that lost its lease cannot overwrite the next attempt's outcome.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit
from mlservice.jobs.tables import Job, JobStatus
from mlservice.predictors.base import InvalidInput, PredictInput, PredictOutput
from mlservice.predictors.pool import PredictorPool
from mlservice.queue.base import JobQueue
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.wallet import service as wallet

log = logging.getLogger(__name__)


@dataclass
class Claimed:
    id: uuid.UUID
    attempt: int
    input_file: str | None
    input_text: str | None
    params: dict[str, Any]


@dataclass
class Outcome:
    output: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    processing_ms: float | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)


class JobExecutor:
    def __init__(
        self, db: Database, storage: Storage, pool: PredictorPool, *, lease_seconds: int, max_attempts: int
    ) -> None:
        self.db = db
        self.storage = storage
        self.pool = pool
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts

    async def claim(self, job_ids: list[uuid.UUID]) -> list[Claimed]:
        claimed: list[Claimed] = []
        now = utcnow()
        async with self.db.session(write=True) as session:
            for job_id in job_ids:
                row = (
                    await session.execute(
                        update(Job)
                        .where(Job.id == job_id, Job.status == JobStatus.queued)
                        .values(
                            status=JobStatus.running,
                            attempts=Job.attempts + 1,
                            started_at=now,
                            lease_expires_at=now + self.lease,
                        )
                        .returning(Job.id, Job.attempts, Job.input_file, Job.input_text, Job.params)
                    )
                ).one_or_none()
                if row is not None:
                    claimed.append(Claimed(*row))
        return claimed

    async def run_batch(self, model_slug: str, job_ids: list[uuid.UUID]) -> None:
        """Execute a batch of job ids of one model; ids no longer queued are skipped."""
        claimed = await self.claim(job_ids)
        if not claimed:
            return
        outcomes = await self._predict(model_slug, claimed)
        await self.finish(claimed, outcomes)

    async def _predict(self, model_slug: str, claimed: list[Claimed]) -> dict[uuid.UUID, Outcome]:
        outcomes: dict[uuid.UUID, Outcome] = {}
        try:
            predictor = await self.pool.get(model_slug)
        except Exception as exc:
            log.exception("model %s failed to load", model_slug)
            message = f"The model could not be loaded: {exc}"
            return {c.id: Outcome(error_code="model_unavailable", error_message=message) for c in claimed}

        runnable: list[tuple[Claimed, PredictInput]] = []
        for job in claimed:
            data = None
            if job.input_file is not None:
                try:
                    data = await self.storage.get(job.input_file)
                except FileNotFoundError:
                    outcomes[job.id] = Outcome(
                        error_code="input_missing", error_message="The input file is gone."
                    )
                    continue
            runnable.append((job, PredictInput(data=data, text=job.input_text, params=job.params)))

        async def run(items: list[tuple[Claimed, PredictInput]]) -> None:
            started = time.perf_counter()
            results: list[PredictOutput] = await anyio.to_thread.run_sync(
                predictor.predict_batch, [i for _, i in items], limiter=self.pool.limiters[model_slug]
            )
            elapsed = (time.perf_counter() - started) * 1000
            if len(results) != len(items):
                raise RuntimeError(f"{model_slug} returned {len(results)} outputs for {len(items)} inputs")
            for (job, _), result in zip(items, results, strict=True):
                outcomes[job.id] = Outcome(output=result.result, processing_ms=round(elapsed, 3))

        async def run_isolating(items: list[tuple[Claimed, PredictInput]]) -> None:
            try:
                await run(items)
            except Exception as exc:
                if len(items) > 1:
                    # One bad input must not fail its batch-mates: run them one by one.
                    for item in items:
                        await run_isolating([item])
                    return
                job_id = items[0][0].id
                if isinstance(exc, InvalidInput):
                    outcomes[job_id] = Outcome(error_code=exc.code, error_message=exc.message)
                else:
                    log.exception("job %s failed in %s", job_id, model_slug)
                    outcomes[job_id] = Outcome(
                        error_code="prediction_failed", error_message=f"The model failed on this input: {exc}"
                    )

        if runnable:
            await run_isolating(runnable)
        return outcomes

    async def finish(self, claimed: list[Claimed], outcomes: dict[uuid.UUID, Outcome]) -> None:
        """Commit each job's result with the capture (or release) of its hold, in one transaction."""
        async with self.db.session(write=True) as session:
            for job in claimed:
                await record_outcome(session, job.id, job.attempt, outcomes[job.id])


async def record_outcome(session: AsyncSession, job_id: uuid.UUID, attempt: int, outcome: Outcome) -> bool:
    succeeded = outcome.error_code is None
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == attempt)
        .values(
            status=JobStatus.succeeded if succeeded else JobStatus.failed,
            output=outcome.output,
            error_code=outcome.error_code,
            error_message=outcome.error_message,
            processing_ms=outcome.processing_ms,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("job %s attempt %s lost its claim; result dropped", job_id, attempt)
        return False
    if succeeded:
        await wallet.capture_hold(session, job_id)
    else:
        await wallet.release_hold(session, job_id)
    return True


async def sweep(session: AsyncSession, queue: JobQueue, *, max_attempts: int) -> int:
    """Requeue running jobs whose lease expired; fail them (releasing the hold) past the attempt limit."""
    now = utcnow()
    expired = list(
        await session.execute(
            select(Job.id, Job.model_slug, Job.attempts).where(
                Job.status == JobStatus.running, Job.lease_expires_at < now
            )
        )
    )
    for job_id, model_slug, attempts in expired:
        if attempts >= max_attempts:
            await record_outcome(
                session,
                job_id,
                attempts,
                Outcome(
                    error_code="attempts_exhausted",
                    error_message=f"The job did not finish in {attempts} attempts.",
                ),
            )
            continue
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == attempts)
            .values(status=JobStatus.queued, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]

            async def publish(job_id: uuid.UUID = job_id, slug: str = model_slug) -> None:
                await queue.publish(slug, job_id)

            after_commit(session, publish)
    return len(expired)


async def queued_jobs(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    rows = await session.execute(
        select(Job.id, Job.model_slug).where(Job.status == JobStatus.queued).order_by(Job.created_at)
    )
    return [(job_id, slug) for job_id, slug in rows]
