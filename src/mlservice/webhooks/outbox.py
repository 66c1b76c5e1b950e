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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit, before_commit
from mlservice.jobs import repository
from mlservice.jobs.tables import Job, JobStatus
from mlservice.types import utcnow
from mlservice.webhooks.tables import WebhookDelivery

log = logging.getLogger(__name__)

# The events a job's filter may name, in the order they happen.
EVENTS = ("start", "output", "logs", "completed")

# The job as the API that created it shows it, JSON-ready.
Formatter = Callable[[Job], dict[str, Any]]

DEFAULT_FLAVOUR = "api"


class Deliverer(Protocol):
    def wake(self) -> None: ...


@dataclass
class _Wiring:
    """What the outbox of one database needs in this process: set up by the composition root."""

    formatters: dict[str, Formatter] = field(default_factory=dict)
    # Woken when a transaction added deliveries.
    deliverer: Deliverer | None = None


_wiring: weakref.WeakKeyDictionary[Database, _Wiring] = weakref.WeakKeyDictionary()

_PENDING = "webhook_events"
_deliveries = cast(Table, WebhookDelivery.__table__)


def register_formatters(database: Database, formatters: Mapping[str, Formatter]) -> None:
    """Render the bodies of jobs created with each flavour with its formatter.

    The composition root registers every flavour (``/api``'s and ``/v1``'s) in every process,
    workers included. A formatter runs inside the transaction of the event, with the job row as
    that transaction leaves it; it must not do I/O.
    """
    _wiring.setdefault(database, _Wiring()).formatters.update(formatters)


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


def render(job: Job, formatters: Mapping[str, Formatter]) -> dict[str, Any]:
    flavour = job.webhook_flavour or DEFAULT_FLAVOUR
    for name in dict.fromkeys((flavour, DEFAULT_FLAVOUR)):
        formatter = formatters.get(name)
        if formatter is None:
            log.warning("no webhook formatter %r registered for job %s", name, job.id)
            continue
        try:
            # Through JSON once, so the stored body is exactly what will be sent.
            body: dict[str, Any] = json.loads(json.dumps(formatter(job), default=str))
            return body
        except Exception:
            log.exception("webhook formatter %r failed for job %s", name, job.id)
    return {"id": str(job.id), "status": str(job.status)}


async def _write(session: AsyncSession) -> None:
    pending: dict[uuid.UUID, list[str]] = session.info.pop(_PENDING, {})
    if not pending:
        return
    jobs = await repository.many(session, list(pending))
    database = session.info.get("database")
    wiring = _wiring.get(database) if isinstance(database, Database) else None
    formatters = wiring.formatters if wiring is not None else {}
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
            body = body if body is not None else render(job, formatters)
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
    deliverer = wiring.deliverer if wiring is not None else None
    if deliverer is not None:

        async def wake() -> None:
            deliverer.wake()

        after_commit(session, wake)


def attach(database: Database, deliverer: Deliverer) -> None:
    """Wake ``deliverer`` whenever a transaction on ``database`` in this process adds deliveries."""
    _wiring.setdefault(database, _Wiring()).deliverer = deliverer
