"""Runs jobs: claim → predict → commit result and capture, the protocol every worker follows.

A claim is a guarded UPDATE (``queued → running``) that also counts the attempt and sets a lease;
the result is written only if the job is still ``running`` with that attempt number, together
with the capture of its hold. A duplicate delivery therefore finds nothing to claim, and a worker
that lost its lease cannot overwrite the next attempt's outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from typing import Any, cast

import anyio
from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_rollback
from mlservice.jobs.attempts import Claimed, Disposition, Outcome
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.events import announce_finished
from mlservice.jobs.tables import Job, JobStatus
from mlservice.observability.jobs import JobTelemetry
from mlservice.predictors.base import InvalidInput, PredictInput, Predictor, PredictOutput
from mlservice.predictors.pool import PredictorPool
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.wallet import service as wallet
from mlservice.webhooks import outbox as webhooks

log = logging.getLogger(__name__)


SuccessHook = Callable[[AsyncSession, PredictOutput], Awaitable[None]]


class JobExecutor:
    def __init__(
        self,
        db: Database,
        storage: Storage,
        pool: PredictorPool,
        *,
        lease_seconds: int,
        max_attempts: int,
        telemetry: JobTelemetry | None = None,
    ) -> None:
        self.db = db
        self.telemetry = telemetry or JobTelemetry()
        self.storage = storage
        self.pool = pool
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        # Jobs this process has claimed and not yet settled -> attempt: their leases get renewed.
        self.running: dict[uuid.UUID, int] = {}

    async def claim(self, job_ids: list[uuid.UUID]) -> list[Claimed]:
        """Claim the ids still queued, in one statement whatever the batch size."""
        now = utcnow()
        async with self.db.session(write=True) as session:
            rows = await session.execute(
                _CLAIM, {"ids": sorted(set(job_ids)), "now": now, "lease_until": now + self.lease}
            )
            claimed = sorted((Claimed(*row) for row in rows), key=lambda c: c.id)
            for job in claimed:
                # A retried job announced its start on its first attempt.
                if job.webhook_url and job.attempt == 1 and webhooks.announces(job.webhook_events, "start"):
                    webhooks.enqueue(session, job.id, "start")
        for job in claimed:
            self.running[job.id] = job.attempt
        return claimed

    async def run_batch(self, model_slug: str, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Disposition]:
        """Execute a batch of job ids of one model; ids no longer queued are skipped (and acked)."""
        claimed = await self.claim(job_ids)
        if not claimed:
            return dict.fromkeys(job_ids, Disposition.ack)
        try:
            with self.telemetry.running(model_slug, claimed):
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
            report = self.telemetry.settling(session, model_slug)
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
                        report.retry(job, outcome)
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
                if recorded:
                    report.finish(job, outcome, dead_letter=outcome.retryable)
        return settled


def _overrides(cls: type[Predictor], hook: str) -> bool:
    return getattr(cls, hook).__func__ is not getattr(Predictor, hook).__func__


# Deadlock detected / serialization failure: the transaction was rolled back whole and can be re-run.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
DEADLOCK_RETRIES = 3

_jobs = cast(Table, Job.__table__)
# The hot statements, built once (building them is much of their cost in Python). A claim locks
# the rows it takes in id order, so two claimers never wait on each other in a cycle; a row that
# changed while it waited (canceled, claimed) is checked again and left alone.
_CLAIM = (
    update(_jobs)
    .where(
        _jobs.c.id.in_(
            select(_jobs.c.id)
            .where(_jobs.c.id.in_(bindparam("ids", expanding=True)), _jobs.c.status == JobStatus.queued)
            .order_by(_jobs.c.id)
            .with_for_update()
            .scalar_subquery()
        ),
        _jobs.c.status == JobStatus.queued,
    )
    .values(
        status=JobStatus.running,
        attempts=_jobs.c.attempts + 1,
        started_at=bindparam("now"),
        lease_expires_at=bindparam("lease_until"),
    )
    .returning(
        _jobs.c.id,
        _jobs.c.attempts,
        _jobs.c.user_id,
        _jobs.c.input_file,
        _jobs.c.input_text,
        _jobs.c.params,
        _jobs.c.created_at,
        _jobs.c.started_at,
        _jobs.c.cost,
        _jobs.c.request_id,
        _jobs.c.webhook_url,
        _jobs.c.webhook_events,
    )
)
# The outcome, written only while this attempt still owns the job.
_OWNED = (
    _jobs.c.id == bindparam("b_job_id"),
    _jobs.c.status == JobStatus.running,
    _jobs.c.attempts == bindparam("attempt"),
)
_SUCCEED = (
    update(_jobs)
    .where(*_OWNED)
    .values(
        status=JobStatus.succeeded,
        output=bindparam("b_output"),
        artifacts=bindparam("b_artifacts"),
        processing_ms=bindparam("b_processing_ms"),
        finished_at=bindparam("now"),
        lease_expires_at=None,
    )
    .returning(_jobs.c.webhook_url, _jobs.c.webhook_events)
)
_OUTPUT = update(_jobs).where(_jobs.c.id == bindparam("b_job_id")).values(output=bindparam("b_output"))
_FAIL = (
    update(_jobs)
    .where(*_OWNED)
    .values(
        status=JobStatus.failed,
        error_code=bindparam("b_error_code"),
        error_message=bindparam("b_error_message"),
        processing_ms=bindparam("b_processing_ms"),
        finished_at=bindparam("now"),
        lease_expires_at=None,
    )
    .returning(_jobs.c.webhook_url, _jobs.c.webhook_events)
)

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
    artifacts: dict[str, dict[str, Any]] = {}
    if prediction is not None:
        for name, artifact in prediction.artifacts.items():
            if storage is None or not ARTIFACT_NAME.match(name):
                raise ValueError(f"cannot store artifact {name!r}")
            artifacts[name] = {
                "media_type": artifact.media_type,
                "filename": artifact.filename,
                "bytes": len(artifact.data),
            }
    guard = {
        "b_job_id": job_id,
        "attempt": attempt,
        "b_processing_ms": outcome.processing_ms,
        "now": utcnow(),
    }
    if prediction is not None:
        result = await session.execute(
            _SUCCEED, {**guard, "b_output": prediction.result, "b_artifacts": artifacts}
        )
    else:
        error_code = outcome.error_code or "prediction_failed"
        result = await session.execute(
            _FAIL, {**guard, "b_error_code": error_code, "b_error_message": outcome.error_message}
        )
    owned = result.first()
    if owned is None:
        log.warning("job %s attempt %s lost its claim; result dropped", job_id, attempt)
        return False
    await announce_finished(session, job_id)
    if owned.webhook_url and webhooks.announces(owned.webhook_events, "completed"):
        webhooks.enqueue(session, job_id, "completed")
    if prediction is None:
        await wallet.release_hold(session, job_id)
        return True
    if on_success is not None:
        # The hook may change the result (e.g. take out what only it should see): written again.
        await on_success(session, prediction)
        await session.execute(_OUTPUT, {"b_job_id": job_id, "b_output": prediction.result})
    for name, artifact in prediction.artifacts.items():
        assert storage is not None  # checked with the names above
        key = artifact_key(job_id, name)
        await storage.put(key, artifact.data, session=session)
        after_rollback(session, partial(storage.delete, key))
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
