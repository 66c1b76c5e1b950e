"""Job transitions as log events and metrics: queued (submit), running (claim), then succeeded,
failed, retry, dead_lettered or canceled.

Everything here runs on data the job path already holds (the claimed rows, the outcomes) and only
after the transaction that made the transition has committed: a rolled-back (and re-run) settle
is never counted twice. No query is added for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import after_commit
from mlservice.observability.context import bind, current_request
from mlservice.observability.metrics import ServiceMetrics
from mlservice.types import utcnow

if TYPE_CHECKING:
    from mlservice.jobs.attempts import Claimed, Outcome
    from mlservice.jobs.tables import Job

log = logging.getLogger("mlservice.jobs.events")


def _ms(start: datetime | None, end: datetime) -> float | None:
    return round((end - start).total_seconds() * 1000, 1) if start is not None else None


def job_queued(session: AsyncSession, job: Job) -> None:
    """At submit, in its unit of work: the ``job.queued`` event once it commits."""
    _after_request_commit(session, job, "job.queued", "submitted")


def job_ended(session: AsyncSession, job: Job, status: str, *, metrics: ServiceMetrics | None = None) -> None:
    """At a cancel (by its owner or its deadline) or an abort, in its unit of work: the
    ``job.canceled`` or ``job.aborted`` event once it commits. ``metrics``: where no request is
    (the deadline sweep)."""
    _after_request_commit(session, job, f"job.{status}", status, metrics=metrics)


def _after_request_commit(
    session: AsyncSession, job: Job, event: str, counted: str, *, metrics: ServiceMetrics | None = None
) -> None:
    # Read now: the commit callbacks may run after the request's context is gone.
    request = current_request()
    if request is not None:
        metrics = request.metrics
    fields: dict[str, Any] = {
        "job_id": str(job.id),
        "model": job.model_slug,
        "user_id": str(job.user_id),
        "request_id": job.request_id or (request.request_id if request is not None else None),
        "cost": job.cost,
    }
    if counted != "submitted":
        fields["queued_ms"] = _ms(job.created_at, utcnow())

    async def report() -> None:
        if metrics is not None:
            if counted == "submitted":
                metrics.jobs_submitted.labels(job.model_slug).inc()
            else:
                metrics.jobs_finished.labels(job.model_slug, counted).inc()
        log.info(event, extra=fields)

    after_commit(session, report)


class JobTelemetry:
    """The executor's reporter: one per executor, bound to its process's metrics (if any)."""

    def __init__(self, metrics: ServiceMetrics | None = None, models: Iterable[str] = ()) -> None:
        self.metrics = metrics
        if metrics is not None:
            metrics.declare_models(models)

    @contextmanager
    def running(self, model: str, jobs: Sequence[Claimed]) -> Iterator[None]:
        """Report the claim, and bind the jobs' ids and request ids while the batch runs."""
        now = utcnow()
        if self.metrics is not None:
            self.metrics.batch_size.labels(model).observe(len(jobs))
        for job in jobs:
            queued_ms = _ms(job.created_at, job.started_at or now)
            if self.metrics is not None and queued_ms is not None:
                self.metrics.job_queue.labels(model).observe(queued_ms / 1000)
            log.info(
                "job.running",
                extra={**_job_fields(model, job), "queued_ms": queued_ms, "batch_size": len(jobs)},
            )
        context: dict[str, Any]
        if len(jobs) == 1:
            context = {"job_id": str(jobs[0].id), "request_id": jobs[0].request_id}
        else:
            context = {
                "job_ids": [str(job.id) for job in jobs],
                "request_ids": [job.request_id for job in jobs],
            }
        with bind(model=model, **context):
            yield

    def settling(self, session: AsyncSession, model: str) -> BatchReport:
        """Collects a batch's settled jobs; reports them once ``session`` commits."""
        report = self.report(model)
        after_commit(session, report.committed)
        return report

    def report(self, model: str) -> BatchReport:
        """Collects a batch's settled jobs; its owner calls ``committed()`` after the commit."""
        return BatchReport(self, model)


@dataclass
class BatchReport:
    telemetry: JobTelemetry
    model: str
    retried: list[tuple[Claimed, Outcome]] = field(default_factory=list)
    finished: list[tuple[Claimed, Outcome, bool]] = field(default_factory=list)

    def retry(self, job: Claimed, outcome: Outcome) -> None:
        self.retried.append((job, outcome))

    def finish(self, job: Claimed, outcome: Outcome, *, dead_letter: bool) -> None:
        self.finished.append((job, outcome, dead_letter))

    async def committed(self) -> None:
        metrics, model, now = self.telemetry.metrics, self.model, utcnow()
        for job, outcome in self.retried:
            if metrics is not None:
                metrics.job_retries.labels(model).inc()
            log.warning(
                "job.retry",
                extra={
                    **_job_fields(model, job),
                    "error_code": outcome.error_code,
                    "error_message": outcome.error_message,
                },
            )
        for job, outcome, dead_letter in self.finished:
            succeeded = outcome.error_code is None and outcome.prediction is not None
            fields = {
                **_job_fields(model, job),
                "processing_ms": outcome.processing_ms,
                "total_ms": _ms(job.created_at, now),
            }
            if metrics is not None:
                metrics.jobs_finished.labels(model, "succeeded" if succeeded else "failed").inc()
                if outcome.processing_ms is not None:
                    metrics.job_processing.labels(model).observe(outcome.processing_ms / 1000)
                if succeeded:
                    metrics.credits_captured.labels(model).inc(job.cost)
                if dead_letter:
                    metrics.jobs_dead_lettered.labels(model).inc()
            if succeeded:
                log.info("job.succeeded", extra={**fields, "cost": job.cost})
                continue
            fields |= {"error_code": outcome.error_code, "error_message": outcome.error_message}
            if dead_letter:
                log.error("job.dead_lettered", extra=fields)
            else:
                log.info("job.failed", extra=fields)


def _job_fields(model: str, job: Claimed) -> dict[str, Any]:
    return {
        "job_id": str(job.id),
        "model": model,
        "attempt": job.attempt,
        "user_id": str(job.user_id),
        "request_id": job.request_id,
    }
