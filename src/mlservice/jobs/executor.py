"""Runs jobs: claim → predict → commit result and capture, the protocol every worker follows.

A claim is a guarded UPDATE (``queued → running``) that also counts the attempt and sets a lease;
the result is written only if the job is still ``running`` with that attempt number, together
with the capture of its hold. A duplicate delivery therefore finds nothing to claim, and a worker
that lost its lease cannot overwrite the next attempt's outcome.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from datetime import timedelta
from functools import partial
from typing import Any

import anyio
import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit
from mlservice.jobs import repository
from mlservice.jobs.attempts import Claimed, Disposition, Outcome
from mlservice.jobs.batch_settle import Success, settle_successes, settle_successes_alone
from mlservice.jobs.events import announce_changed_here, announce_committed
from mlservice.jobs.hooks import JobHooks
from mlservice.jobs.live import LiveJobs, capture_logs, joined
from mlservice.jobs.retries import Backoff, is_retryable
from mlservice.jobs.service import end_overdue
from mlservice.jobs.settle import SuccessHook, record_outcome
from mlservice.observability.jobs import BatchReport, JobTelemetry
from mlservice.predictors.base import (
    InvalidInput,
    JobCanceled,
    PermanentError,
    PredictInput,
    PredictOutput,
)
from mlservice.predictors.pool import PredictorPool
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.wallet import alerts
from mlservice.wallet import service as wallet
from mlservice.webhooks import outbox as webhooks

log = logging.getLogger(__name__)


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
        hooks: Mapping[str, JobHooks] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.db = db
        self.telemetry = telemetry or JobTelemetry()
        self.storage = storage
        self.pool = pool
        self.lease = timedelta(seconds=lease_seconds)
        self.max_attempts = max_attempts
        self.hooks: dict[str, JobHooks] = dict(hooks or {})
        self.backoff = backoff if backoff is not None else Backoff()
        # Jobs this process has claimed and not yet settled -> attempt: their leases get renewed.
        self.running: dict[uuid.UUID, int] = {}
        # Their controls: progress reports out, cancels in.
        self.live = LiveJobs(db)
        # Jobs sent back for another attempt -> seconds their message waits before it is redelivered
        # (taken by the worker that settles the message).
        self.retry_delays: dict[uuid.UUID, float] = {}

    async def claim(self, job_ids: list[uuid.UUID]) -> list[Claimed]:
        """Claim the ids still queued, in one statement whatever the batch size (on PostgreSQL,
        a second one for jobs whose claim writes a webhook's start event with it)."""
        now = utcnow()
        lease_until = now + self.lease
        wanted = sorted(set(job_ids))
        claimed: list[Claimed] = []
        if not self.db.is_sqlite:
            # Most claims write nothing else: a statement of its own, no unit of work around it.
            async with self.db.driver() as connection:
                claimed = await repository.claim_quietly(connection, wanted, now, lease_until)
            # The others are no longer queued (a duplicate delivery), or announce their start.
            taken = {job.id for job in claimed}
            wanted = [job_id for job_id in wanted if job_id not in taken]
        if wanted:
            async with self.db.session(write=True) as session:
                rest = await repository.claim(session, wanted, now, lease_until)
                for job in rest:
                    # A retried job announced its start on its first attempt.
                    if (
                        job.webhook_url
                        and job.attempt == 1
                        and webhooks.announces(job.webhook_events, "start")
                    ):
                        webhooks.enqueue(session, job.id, "start")
            claimed = sorted([*claimed, *rest], key=lambda c: c.id)
        # Renewed from now on. (Had the second claim failed, the first one's jobs would be left to
        # their lease running out, and to the sweeper.)
        for job in claimed:
            self.running[job.id] = job.attempt
            self.live.start(job.id, job.attempt, job.cancel_at)
        # This process's watchers see the start at once (other processes' look again soon).
        announce_changed_here(self.db, [job.id for job in claimed])
        return claimed

    async def run_batch(self, model_slug: str, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Disposition]:
        """Execute a batch of job ids of one model; ids no longer queued are skipped (and acked)."""
        claimed = await self.claim(job_ids)
        if not claimed:
            return dict.fromkeys(job_ids, Disposition.ack)
        outcomes: dict[uuid.UUID, Outcome] = {}
        try:
            with self.telemetry.running(model_slug, claimed):
                outcomes = await self._predict(model_slug, claimed)
                settled = await self.finish(claimed, outcomes, model_slug)
        finally:
            for job in claimed:
                self.running.pop(job.id, None)
                self.live.done(job.id)
        if any(outcome.canceled for outcome in outcomes.values()):
            # Those past their deadline end now rather than at the next sweep.
            await self._end_overdue()
        return dict.fromkeys(job_ids, Disposition.ack) | settled

    async def _end_overdue(self) -> None:
        try:
            async with self.db.session(write=True) as session:
                await end_overdue(session, metrics=self.telemetry.metrics)
        except Exception:
            log.warning("could not end the jobs past their deadline; the sweep will", exc_info=True)

    async def renew_leases(self) -> int:
        """Extend the lease of every job this process is running; returns how many were renewed."""
        if not self.running:
            return 0
        async with self.db.session(write=True) as session:
            renewed = await repository.renew_leases(session, list(self.running), utcnow() + self.lease)
        # A cancel whose notification was lost is found here, a lease renewal later at most.
        await self.live.check()
        return renewed

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
        hooks = self.hooks.get(model_slug)
        if hooks is not None:
            async with self.db.session() as session:
                for job in claimed:
                    contexts[job.id] = await hooks.load_context(session, job)

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
            control = self.live.control(job.id)
            runnable.append(
                (
                    job,
                    PredictInput(
                        data=data,
                        text=job.input_text,
                        params=job.params,
                        context=contexts.get(job.id),
                        **({"control": control} if control is not None else {}),
                    ),
                )
            )
        logs: dict[uuid.UUID, list[str]] = {job.id: [] for job, _ in runnable}

        async def run(items: list[tuple[Claimed, PredictInput]]) -> None:
            started = time.perf_counter()
            with capture_logs(len(items)) as lines:
                try:
                    results: list[PredictOutput] = await anyio.to_thread.run_sync(
                        predictor.predict_batch, [i for _, i in items], limiter=self.pool.limiters[model_slug]
                    )
                finally:
                    for (job, _), kept in zip(items, lines, strict=True):
                        logs[job.id] = kept
            elapsed = (time.perf_counter() - started) * 1000
            if len(results) != len(items):
                # The same code on the same inputs would do it again: no attempt can succeed.
                raise PermanentError(f"{model_slug} returned {len(results)} outputs for {len(items)} inputs")
            for (job, item), result in zip(items, results, strict=True):
                if item.control.canceled:
                    # Canceled while it ran: the result is dropped.
                    outcomes[job.id] = Outcome(canceled=True)
                    continue
                outcomes[job.id] = Outcome(
                    prediction=result, processing_ms=round(elapsed, 3), logs=joined(logs[job.id])
                )

        async def run_isolating(items: list[tuple[Claimed, PredictInput]]) -> None:
            for job, item in items:
                if item.control.canceled:
                    outcomes[job.id] = Outcome(canceled=True)
            items = [(job, item) for job, item in items if job.id not in outcomes]
            if not items:
                return
            try:
                await run(items)
            except JobCanceled:
                if any(item.control.canceled for _, item in items):
                    # Some job of the batch was canceled; the others run on without it.
                    await run_isolating(items)
                    return
                await failed(items, PermanentError(f"{model_slug} stopped a job nobody canceled"))
            except Exception as exc:
                await failed(items, exc)

        async def failed(items: list[tuple[Claimed, PredictInput]], exc: Exception) -> None:
            if len(items) > 1:
                # One bad input must not fail its batch-mates: run them one by one.
                for item in items:
                    await run_isolating([item])
                return
            job_id = items[0][0].id
            kept = joined(logs[job_id])
            if isinstance(exc, InvalidInput):
                outcomes[job_id] = Outcome(error_code=exc.code, error_message=exc.message, logs=kept)
            elif not is_retryable(exc):
                log.warning("job %s failed in %s for good: %s", job_id, model_slug, exc)
                outcomes[job_id] = Outcome(error_code="prediction_failed", error_message=str(exc), logs=kept)
            else:
                log.error("job %s failed in %s", job_id, model_slug, exc_info=exc)
                outcomes[job_id] = Outcome(
                    error_code="prediction_failed",
                    error_message=f"The model failed on this input: {exc}",
                    retryable=True,
                    logs=kept,
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
            except (DBAPIError, asyncpg.PostgresError) as exc:
                # Raised through SQLAlchemy (the error's origin has the code) or by the driver.
                sqlstate = getattr(getattr(exc, "orig", exc), "sqlstate", None)
                if sqlstate not in RETRYABLE_SQLSTATES or attempt == DEADLOCK_RETRIES:
                    raise
                log.warning("finishing a batch of %s hit %s; retrying", model_slug, exc)
        raise AssertionError("unreachable")

    async def _finish(
        self, claimed: list[Claimed], outcomes: dict[uuid.UUID, Outcome], model_slug: str
    ) -> dict[uuid.UUID, Disposition]:
        # A canceled job's cancel recorded its end (or its deadline's will): nothing to write.
        canceled = {job.id: Disposition.ack for job in claimed if outcomes[job.id].canceled}
        claimed = [job for job in claimed if job.id not in canceled]
        if not claimed:
            return canceled
        return canceled | await self._finish_ran(claimed, outcomes, model_slug)

    async def _finish_ran(
        self, claimed: list[Claimed], outcomes: dict[uuid.UUID, Outcome], model_slug: str
    ) -> dict[uuid.UUID, Disposition]:
        hooks = self.hooks.get(model_slug)
        # Plain successes (no artifacts, no hook) settle together: one statement on PostgreSQL.
        plain = [] if hooks is not None else [job for job in claimed if _is_plain(outcomes[job.id])]
        alone = len(plain) == len(claimed) and not any(_announces_completion(job) for job in plain)
        if alone and not self.db.is_sqlite:
            return await self._settle_alone(plain, outcomes, model_slug)
        return await self._settle_in_session(claimed, plain, outcomes, model_slug, hooks)

    async def _settle_alone(
        self, plain: list[Claimed], outcomes: dict[uuid.UUID, Outcome], model_slug: str
    ) -> dict[uuid.UUID, Disposition]:
        """PostgreSQL, a batch of nothing but plain successes, none of them news for a webhook:
        the batch statement is all there is to write, a unit of work by itself."""
        async with self.db.driver() as connection:
            settled = await settle_successes_alone(connection, _successes(plain, outcomes), utcnow())
        recorded = settled.recorded
        announce_committed(self.db, recorded)
        if settled.low:
            await _review_alerts(self.db, settled.low)
        report = self.telemetry.report(model_slug)
        _report_plain(report, plain, outcomes, recorded)
        await report.committed()
        return dict.fromkeys((job.id for job in plain), Disposition.ack)

    async def _settle_in_session(
        self,
        claimed: list[Claimed],
        plain: list[Claimed],
        outcomes: dict[uuid.UUID, Outcome],
        model_slug: str,
        hooks: JobHooks | None,
    ) -> dict[uuid.UUID, Disposition]:
        settled: dict[uuid.UUID, Disposition] = {}
        async with self.db.session(write=True) as session:
            report = self.telemetry.settling(session, model_slug)
            if plain:
                # Their wallets move in one statement, before the others': every wallet this
                # transaction moves is locked first, in user order, as below.
                await wallet.lock_wallets(session, [job.user_id for job in claimed])
                connection = await session.connection()
                batch = await settle_successes(connection, _successes(plain, outcomes), utcnow())
                recorded = batch.recorded
                alerts.watch(session, batch.low, alerts.Review.debit)
                for job in plain:
                    if job.id in recorded and _announces_completion(job):
                        webhooks.enqueue(session, job.id, "completed")
                    settled[job.id] = Disposition.ack
                _report_plain(report, plain, outcomes, recorded)
                after_commit(session, partial(_wake, self.db, recorded))
            # Wallets are locked in user order (then jobs in id order), as everywhere a transaction
            # locks several: two workers settling jobs of the same users cannot deadlock.
            for job in sorted(claimed, key=lambda c: (c.user_id, c.id)):
                if job.id in settled:
                    continue
                outcome = outcomes[job.id]
                if outcome.retryable and job.attempt < self.max_attempts:
                    requeued = await repository.requeue(session, job.id, job.attempt)
                    if requeued:
                        report.retry(job, outcome)
                        self.retry_delays[job.id] = self.backoff.delay(job.attempt)
                    settled[job.id] = Disposition.retry if requeued else Disposition.ack
                    continue
                if outcome.retryable:
                    outcome = dataclasses.replace(
                        outcome,
                        error_message=f"{outcome.error_message} (gave up after {job.attempt} attempts)",
                    )
                hook: SuccessHook | None = None
                if hooks is not None:
                    hook = partial(_on_success, hooks, job)

                owned = await record_outcome(
                    session, job.id, job.attempt, outcome, storage=self.storage, on_success=hook
                )
                settled[job.id] = Disposition.dead_letter if owned and outcome.retryable else Disposition.ack
                if owned:
                    report.finish(job, outcome, dead_letter=outcome.retryable)
        return settled


# Deadlock detected / serialization failure: the transaction was rolled back whole and can be re-run.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
DEADLOCK_RETRIES = 3


def _is_plain(outcome: Outcome) -> bool:
    prediction = outcome.prediction
    return (
        outcome.error_code is None
        and prediction is not None
        and not prediction.artifacts
        and not outcome.logs
    )


def _announces_completion(job: Claimed) -> bool:
    return bool(job.webhook_url) and webhooks.announces(job.webhook_events, "completed")


def _successes(plain: list[Claimed], outcomes: dict[uuid.UUID, Outcome]) -> list[Success]:
    successes = []
    for job in plain:
        outcome = outcomes[job.id]
        assert outcome.prediction is not None  # a plain success
        successes.append(Success(job.id, job.attempt, outcome.prediction.result, outcome.processing_ms))
    return successes


def _report_plain(
    report: BatchReport, plain: list[Claimed], outcomes: dict[uuid.UUID, Outcome], recorded: set[uuid.UUID]
) -> None:
    for job in plain:
        if job.id in recorded:
            report.finish(job, outcomes[job.id], dead_letter=False)
        else:
            log.warning("job %s attempt %s lost its claim; result dropped", job.id, job.attempt)


async def _wake(db: Database, job_ids: set[uuid.UUID]) -> None:
    announce_committed(db, job_ids)


async def _on_success(hooks: JobHooks, job: Claimed, session: AsyncSession, output: PredictOutput) -> None:
    await hooks.on_success(session, job, output)


async def _review_alerts(db: Database, user_ids: set[uuid.UUID]) -> None:
    """Low-balance alerts of wallets a committed batch left below their next threshold: a failure
    here loses nothing (the wallet stays below it, so its next charge looks again)."""
    try:
        async with db.session(write=True) as session:
            await wallet.lock_wallets(session, user_ids)
            await alerts.review(session, user_ids, alerts.Review.debit)
    except Exception:
        log.warning("could not review low-balance alerts of %d wallets", len(user_ids), exc_info=True)
