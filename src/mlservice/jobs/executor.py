"""Runs jobs: claim → predict → commit result and capture, the protocol every worker follows.

A claim is a guarded UPDATE (``queued → running``) that also counts the attempt and sets a lease;
the result is written only if the job is still ``running`` with that attempt number, together
with the capture of its hold. A duplicate delivery therefore finds nothing to claim, and a worker
that lost its lease cannot overwrite the next attempt's outcome.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import anyio
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_rollback
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.events import announce_finished
from mlservice.jobs.tables import Job, JobStatus
from mlservice.predictors.base import InvalidInput, PredictInput, Predictor, PredictOutput
from mlservice.predictors.pool import PredictorPool
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.wallet import service as wallet

log = logging.getLogger(__name__)


@dataclass
class Claimed:
    id: uuid.UUID
    attempt: int
    user_id: uuid.UUID
    input_file: str | None
    input_text: str | None
    params: dict[str, Any]


@dataclass
class Outcome:
    prediction: PredictOutput | None = None
    error_code: str | None = None
    error_message: str | None = None
    processing_ms: float | None = None
    # The model (not the input) failed: worth another attempt, up to the attempt limit.
    retryable: bool = False


class Disposition(enum.StrEnum):
    """What to do with a job's message once its attempt is settled in the database."""

    ack = "ack"  # finished (or not ours to run): drop the message
    retry = "retry"  # back to queued for another attempt: deliver the message again
    dead_letter = "dead_letter"  # failed on its last attempt: park the message for inspection


SuccessHook = Callable[[AsyncSession, PredictOutput], Awaitable[None]]


class JobExecutor:
    def __init__(
        self, db: Database, storage: Storage, pool: PredictorPool, *, lease_seconds: int, max_attempts: int
    ) -> None:
        self.db = db
        self.storage = storage
        self.pool = pool
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        # Jobs this process has claimed and not yet settled -> attempt: their leases get renewed.
        self.running: dict[uuid.UUID, int] = {}

    async def claim(self, job_ids: list[uuid.UUID]) -> list[Claimed]:
        claimed: list[Claimed] = []
        now = utcnow()
        async with self.db.session(write=True) as session:
            # Rows locked in one global order (ids sorted): two claimers never wait on each other
            # in a cycle.
            for job_id in sorted(set(job_ids)):
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
                        .returning(
                            Job.id, Job.attempts, Job.user_id, Job.input_file, Job.input_text, Job.params
                        )
                    )
                ).one_or_none()
                if row is not None:
                    claimed.append(Claimed(*row))
        for job in claimed:
            self.running[job.id] = job.attempt
        return claimed

    async def run_batch(self, model_slug: str, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Disposition]:
        """Execute a batch of job ids of one model; ids no longer queued are skipped (and acked)."""
        claimed = await self.claim(job_ids)
        if not claimed:
            return dict.fromkeys(job_ids, Disposition.ack)
        try:
            outcomes = await self._predict(model_slug, claimed)
            settled = await self.finish(claimed, outcomes, model_slug)
        finally:
            for job in claimed:
                self.running.pop(job.id, None)
        return dict.fromkeys(job_ids, Disposition.ack) | settled

    async def renew_leases(self) -> int:
        """Extend the lease of every job this process is running; returns how many were renewed."""
        if not self.running:
            return 0
        running = sorted(self.running)
        async with self.db.session(write=True) as session:
            # Rows locked right now are being settled by this worker (or swept): skip them rather
            # than wait, so a renewal never joins a lock cycle with a batch's result transaction.
            lockable = (
                select(Job.id)
                .where(Job.id.in_(running), Job.status == JobStatus.running)
                .order_by(Job.id)
                .with_for_update(skip_locked=True)
            )
            result = await session.execute(
                update(Job)
                .where(Job.id.in_(lockable.scalar_subquery()))
                .values(lease_expires_at=utcnow() + self.lease)
                .execution_options(synchronize_session=False)
            )
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def _predict(self, model_slug: str, claimed: list[Claimed]) -> dict[uuid.UUID, Outcome]:
        outcomes: dict[uuid.UUID, Outcome] = {}
        try:
            predictor = await self.pool.get(model_slug)
        except Exception as exc:
            log.exception("model %s failed to load", model_slug)
            message = f"The model could not be loaded: {exc}"
            return {
                c.id: Outcome(error_code="model_unavailable", error_message=message, retryable=True)
                for c in claimed
            }

        contexts: dict[uuid.UUID, Any] = {}
        cls = type(predictor)
        if _overrides(cls, "load_context"):
            async with self.db.session() as session:
                for job in claimed:
                    contexts[job.id] = await cls.load_context(session, job.user_id, job.params)

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
            runnable.append(
                (
                    job,
                    PredictInput(
                        data=data, text=job.input_text, params=job.params, context=contexts.get(job.id)
                    ),
                )
            )

        async def run(items: list[tuple[Claimed, PredictInput]]) -> None:
            started = time.perf_counter()
            results: list[PredictOutput] = await anyio.to_thread.run_sync(
                predictor.predict_batch, [i for _, i in items], limiter=self.pool.limiters[model_slug]
            )
            elapsed = (time.perf_counter() - started) * 1000
            if len(results) != len(items):
                raise RuntimeError(f"{model_slug} returned {len(results)} outputs for {len(items)} inputs")
            for (job, _), result in zip(items, results, strict=True):
                outcomes[job.id] = Outcome(prediction=result, processing_ms=round(elapsed, 3))

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
                        error_code="prediction_failed",
                        error_message=f"The model failed on this input: {exc}",
                        retryable=True,
                    )

        if runnable:
            await run_isolating(runnable)
        return outcomes

    async def finish(
        self, claimed: list[Claimed], outcomes: dict[uuid.UUID, Outcome], model_slug: str
    ) -> dict[uuid.UUID, Disposition]:
        """Commit each job's result with the capture (or release) of its hold, in one transaction.

        A model failure before the last attempt sends the job back to the queue instead; on the
        last attempt it fails for good, its hold is released and its message is dead-lettered.
        """
        for attempt in range(1, DEADLOCK_RETRIES + 1):
            try:
                return await self._finish(claimed, outcomes, model_slug)
            except DBAPIError as exc:
                if (
                    getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES
                    or attempt == DEADLOCK_RETRIES
                ):
                    raise
                log.warning("finishing a batch of %s hit %s; retrying", model_slug, exc.orig)
        raise AssertionError("unreachable")

    async def _finish(
        self, claimed: list[Claimed], outcomes: dict[uuid.UUID, Outcome], model_slug: str
    ) -> dict[uuid.UUID, Disposition]:
        cls = self.pool.classes[model_slug]
        settled: dict[uuid.UUID, Disposition] = {}
        async with self.db.session(write=True) as session:
            # Wallets are locked in user order (then jobs in id order), as everywhere a transaction
            # locks several: two workers settling jobs of the same users cannot deadlock.
            for job in sorted(claimed, key=lambda c: (c.user_id, c.id)):
                outcome = outcomes[job.id]
                if outcome.retryable and job.attempt < self.max_attempts:
                    retried = await session.execute(
                        update(Job)
                        .where(Job.id == job.id, Job.status == JobStatus.running, Job.attempts == job.attempt)
                        .values(status=JobStatus.queued, lease_expires_at=None)
                        .execution_options(synchronize_session=False)
                    )
                    requeued = retried.rowcount == 1  # type: ignore[attr-defined]
                    if requeued:
                        log.warning(
                            "job %s attempt %d failed, retrying: %s",
                            job.id,
                            job.attempt,
                            outcome.error_message,
                        )
                    settled[job.id] = Disposition.retry if requeued else Disposition.ack
                    continue
                if outcome.retryable:
                    outcome = dataclasses.replace(
                        outcome,
                        error_message=f"{outcome.error_message} (gave up after {job.attempt} attempts)",
                    )
                hook: SuccessHook | None = None
                if _overrides(cls, "on_success"):

                    async def hook(s: AsyncSession, out: PredictOutput, job: Claimed = job) -> None:
                        await cls.on_success(s, job.user_id, job.id, job.params, out)

                recorded = await record_outcome(
                    session, job.id, job.attempt, outcome, storage=self.storage, on_success=hook
                )
                settled[job.id] = (
                    Disposition.dead_letter if recorded and outcome.retryable else Disposition.ack
                )
        return settled


def _overrides(cls: type[Predictor], hook: str) -> bool:
    return getattr(cls, hook).__func__ is not getattr(Predictor, hook).__func__


# Deadlock detected / serialization failure: the transaction was rolled back whole and can be re-run.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
DEADLOCK_RETRIES = 3

ARTIFACT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def artifact_key(job_id: uuid.UUID, name: str) -> str:
    return f"jobs/{job_id}/artifacts/{name}"


async def record_outcome(
    session: AsyncSession,
    job_id: uuid.UUID,
    attempt: int,
    outcome: Outcome,
    *,
    storage: Storage | None = None,
    on_success: SuccessHook | None = None,
) -> bool:
    """Write the outcome if this attempt still owns the job; False when it lost its claim.

    On success the predictor's hook runs and the artifacts are stored in the same unit of work,
    so a result, its side effects and its charge commit together or not at all.
    """
    prediction = outcome.prediction if outcome.error_code is None else None
    succeeded = prediction is not None
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == attempt)
        .values(
            status=JobStatus.succeeded if succeeded else JobStatus.failed,
            error_code=None if succeeded else (outcome.error_code or "prediction_failed"),
            error_message=None if succeeded else outcome.error_message,
            processing_ms=outcome.processing_ms,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        log.warning("job %s attempt %s lost its claim; result dropped", job_id, attempt)
        return False
    await announce_finished(session, job_id)
    if prediction is None:
        await wallet.release_hold(session, job_id)
        return True
    if on_success is not None:
        await on_success(session, prediction)
    artifacts: dict[str, dict[str, Any]] = {}
    for name, artifact in prediction.artifacts.items():
        if storage is None or not ARTIFACT_NAME.match(name):
            raise ValueError(f"cannot store artifact {name!r}")
        key = artifact_key(job_id, name)
        await storage.put(key, artifact.data, session=session)
        after_rollback(session, partial(storage.delete, key))
        artifacts[name] = {
            "media_type": artifact.media_type,
            "filename": artifact.filename,
            "bytes": len(artifact.data),
        }
    await session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(output=prediction.result, artifacts=artifacts)
        .execution_options(synchronize_session=False)
    )
    await wallet.capture_hold(session, job_id)
    return True


async def sweep(session: AsyncSession, publisher: JobPublisher, *, max_attempts: int) -> int:
    """Requeue running jobs whose lease expired; fail them (releasing the hold) past the attempt limit."""
    now = utcnow()
    expired = list(
        await session.execute(
            select(Job.id, Job.model_slug, Job.attempts)
            .where(Job.status == JobStatus.running, Job.lease_expires_at < now)
            .order_by(Job.user_id, Job.id)
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
            .values(status=JobStatus.queued, lease_expires_at=None, published_at=None)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            publisher.publish_after_commit(session, model_slug, job_id, attempts)
    return len(expired)


async def queued_jobs(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    rows = await session.execute(
        select(Job.id, Job.model_slug).where(Job.status == JobStatus.queued).order_by(Job.created_at)
    )
    return [(job_id, slug) for job_id, slug in rows]
