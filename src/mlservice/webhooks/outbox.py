"""The outbox: webhook deliveries written in the transaction that makes their event happen.

Code that changes a job calls :func:`enqueue` with the job and what happened. Nothing is written
then: right before the unit of work commits, the jobs named in it are read once (as that
transaction leaves them) and one INSERT adds a delivery for each event that the job's filter
wants, its body rendered by the formatter of the API that created the job. A rollback writes
nothing; a commit wakes this process's deliverer.
"""

from __future__ import annotations

import json
import logging
import uuid
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit, before_commit
from mlservice.jobs.tables import Job, JobStatus
from mlservice.types import utcnow
from mlservice.webhooks.tables import WebhookDelivery

if TYPE_CHECKING:
    from mlservice.webhooks.deliverer import WebhookDeliverer

log = logging.getLogger(__name__)

# The events a job's filter may name, in the order they happen.
EVENTS = ("start", "output", "logs", "completed")

# The job as the API that created it shows it, JSON-ready.
Formatter = Callable[[Job], dict[str, Any]]

DEFAULT_FLAVOUR = "api"

_formatters: dict[str, Formatter] = {}
# Database -> the deliverer of this process, woken when a transaction added deliveries.
_deliverers: weakref.WeakKeyDictionary[Database, WebhookDeliverer] = weakref.WeakKeyDictionary()

_PENDING = "webhook_events"
_deliveries = cast(Table, WebhookDelivery.__table__)


def register_formatter(flavour: str, formatter: Formatter) -> None:
    """Render the bodies of jobs created with ``flavour`` with ``formatter``.

    Register when your module is imported (``mlservice.app`` imports every router in every
    process, workers included). The formatter runs inside the transaction of the event, with
    the job row as that transaction leaves it; it must not do I/O.
    """
    _formatters[flavour] = formatter


def subscribe(job: Job, url: str, events: Sequence[str] | None, *, flavour: str = DEFAULT_FLAVOUR) -> None:
    """Give a new ``job`` a webhook (``url`` and ``events`` validated by the caller)."""
    job.webhook_url = url
    job.webhook_events = list(events) if events is not None else None
    job.webhook_flavour = flavour


def announces(events: Sequence[str] | None, occurrence: str) -> bool:
    """Whether a job with the filter ``events`` may be sent anything for ``occurrence``; a cheap
    check for hot paths, before they call :func:`enqueue`."""
    if events is None:
        return True
    if occurrence == "completed":
        return "completed" in events or "output" in events
    return occurrence in events


def enqueue(session: AsyncSession, job: Job | uuid.UUID, occurrence: str) -> None:
    """Send the job's webhook news of ``occurrence`` once ``session``'s unit of work commits.

    A job without a webhook, or whose filter does not name the event, gets nothing. ``completed``
    (succeeded, failed or canceled) carries the output: a filter naming ``output`` but not
    ``completed`` is sent one ``output`` event when the job succeeds.
    """
    if occurrence not in EVENTS:
        raise ValueError(f"unknown webhook event {occurrence!r}")
    job_id = job if isinstance(job, uuid.UUID) else job.id
    pending: dict[uuid.UUID, list[str]] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = {}
        before_commit(session, _PENDING, partial(_write, session))
    pending.setdefault(job_id, []).append(occurrence)


def event_for(job: Job, occurrence: str) -> str | None:
    """The event a job's filter wants sent for ``occurrence``, if any."""
    events = job.webhook_events
    if events is None or occurrence in events:
        return occurrence
    if occurrence == "completed" and job.status == JobStatus.succeeded and "output" in events:
        return "output"
    return None


def render(job: Job) -> dict[str, Any]:
    flavour = job.webhook_flavour or DEFAULT_FLAVOUR
    formatter = _formatters.get(flavour)
    if formatter is not None:
        try:
            # Through JSON once, so the stored body is exactly what will be sent.
            body: dict[str, Any] = json.loads(json.dumps(formatter(job), default=str))
            return body
        except Exception:
            log.exception("webhook formatter %r failed for job %s; sending the /api view", flavour, job.id)
    elif flavour != DEFAULT_FLAVOUR:
        log.warning("no webhook formatter %r registered; sending the /api view of job %s", flavour, job.id)
    return api_view(job)


def api_view(job: Job) -> dict[str, Any]:
    # Imported here: the jobs service itself enqueues webhook events.
    from mlservice.jobs.service import job_read

    return job_read(job).model_dump(mode="json")


async def _write(session: AsyncSession) -> None:
    pending: dict[uuid.UUID, list[str]] = session.info.pop(_PENDING, {})
    if not pending:
        return
    jobs = {
        job.id: job
        for job in await session.scalars(
            select(Job).where(Job.id.in_(list(pending))).execution_options(populate_existing=True)
        )
    }
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for job_id, occurrences in pending.items():
        job = jobs.get(job_id)
        if job is None or not job.webhook_url:
            continue
        body: dict[str, Any] | None = None
        for occurrence in occurrences:
            event = event_for(job, occurrence)
            if event is None:
                continue
            body = body if body is not None else render(job)
            rows.append(
                {
                    "job_id": job.id,
                    "user_id": job.user_id,
                    "event": event,
                    "url": job.webhook_url,
                    "payload": body,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                }
            )
    if not rows:
        return
    await session.execute(insert(_deliveries), rows)
    database = session.info.get("database")
    deliverer = _deliverers.get(database) if isinstance(database, Database) else None
    if deliverer is not None:

        async def wake() -> None:
            deliverer.wake()

        after_commit(session, wake)


def attach(database: Database, deliverer: WebhookDeliverer) -> None:
    """Wake ``deliverer`` whenever a transaction on ``database`` in this process adds deliveries."""
    _deliverers[database] = deliverer
