"""The SQL of the ``jobs`` table: reads for their owners and for the APIs' listings, and the worker's
path (claim, lease renewal, retry, outcome, sweep, relay).

The hot statements are built once with bind parameters (building them is much of their cost in
Python). Every write that settles an attempt is guarded by the attempt number, so a worker that
lost its claim changes nothing.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any, cast

import asyncpg
from sqlalchemy import (
    JSON,
    ColumnElement,
    Row,
    Table,
    Update,
    Uuid,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import DriverStatement
from mlservice.jobs.attempts import Claimed
from mlservice.jobs.tables import Job, JobStatus
from mlservice.types import utcnow

_jobs = cast(Table, Job.__table__)


# The hot statements, built once (building them is much of their cost in Python). A claim locks
# the rows it takes in id order, so two claimers never wait on each other in a cycle; a row that
# changed while it waited (canceled, claimed) is checked again and left alone.
def _claim(*which: ColumnElement[bool]) -> Update:
    return (
        update(_jobs)
        .where(
            _jobs.c.id.in_(
                select(_jobs.c.id)
                .where(
                    *which,
                    _jobs.c.status == JobStatus.queued,
                    # Past its deadline a queued job is not started: the sweep aborts it.
                    or_(_jobs.c.cancel_at.is_(None), _jobs.c.cancel_at > bindparam("now")),
                )
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
            _jobs.c.cancel_at,
        )
    )


_CLAIM = _claim(_jobs.c.id.in_(bindparam("ids", expanding=True)))
# On PostgreSQL most claims write nothing else: those of jobs without a webhook, or retries
# (which announced their start on their first attempt). Such a claim is one statement on a driver
# connection, the ids one array parameter (the same statement whatever the batch size).
_CLAIM_QUIETLY = DriverStatement(
    _claim(
        _jobs.c.id == any_(bindparam("ids", type_=ARRAY(Uuid))),
        or_(_jobs.c.webhook_url.is_(None), _jobs.c.attempts > 0),
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
        logs=bindparam("b_logs"),
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
        logs=bindparam("b_logs"),
        finished_at=bindparam("now"),
        lease_expires_at=None,
    )
    .returning(_jobs.c.webhook_url, _jobs.c.webhook_events)
)


async def claim(
    session: AsyncSession, job_ids: list[uuid.UUID], now: datetime, lease_until: datetime
) -> list[Claimed]:
    """Claim the ids still queued, in one statement whatever the batch size, in id order."""
    rows = await session.execute(
        _CLAIM, {"ids": sorted(set(job_ids)), "now": now, "lease_until": lease_until}
    )
    return sorted((Claimed(*row) for row in rows), key=lambda c: c.id)


async def claim_quietly(
    connection: asyncpg.Connection, job_ids: list[uuid.UUID], now: datetime, lease_until: datetime
) -> list[Claimed]:
    """PostgreSQL: claim the ids still queued whose claim writes nothing else (see above), in id
    order; the others stay queued, for :func:`claim`."""
    rows = await _CLAIM_QUIETLY.fetch(
        connection, {"ids": sorted(set(job_ids)), "now": now, "lease_until": lease_until}
    )
    claimed = []
    for row in rows:
        job = Claimed(*row)
        # The driver's rows carry JSON as text.
        job.params = json.loads(row["params"])
        job.webhook_events = None if row["webhook_events"] is None else json.loads(row["webhook_events"])
        claimed.append(job)
    return sorted(claimed, key=lambda c: c.id)


async def renew_leases(session: AsyncSession, job_ids: list[uuid.UUID], lease_until: datetime) -> int:
    """Extend the leases of the running jobs among ``job_ids``; how many were renewed."""
    # Rows locked right now are being settled by this worker (or swept): skip them rather
    # than wait, so a renewal never joins a lock cycle with a batch's result transaction.
    lockable = (
        select(Job.id)
        .where(Job.id.in_(sorted(job_ids)), Job.status == JobStatus.running)
        .order_by(Job.id)
        .with_for_update(skip_locked=True)
    )
    result = await session.execute(
        update(Job)
        .where(Job.id.in_(lockable.scalar_subquery()))
        .values(lease_expires_at=lease_until)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def requeue(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, *, unpublished: bool = False
) -> bool:
    """Send a running attempt back to ``queued``; False when it no longer owned the job.
    ``unpublished``: its message is gone too (a lost lease), so the relay may publish it again."""
    values: dict[str, Any] = {"status": JobStatus.queued, "lease_expires_at": None}
    if unpublished:
        values["published_at"] = None
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running, Job.attempts == attempt)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def succeed(
    session: AsyncSession,
    job_id: uuid.UUID,
    attempt: int,
    *,
    output: dict[str, Any],
    artifacts: dict[str, dict[str, Any]],
    processing_ms: float | None,
    logs: str | None = None,
) -> Row[Any] | None:
    """Record a success if this attempt owns the job: the job's webhook fields, or None."""
    guard = {
        "b_job_id": job_id,
        "attempt": attempt,
        "b_processing_ms": processing_ms,
        "b_logs": logs,
        "now": utcnow(),
    }
    result = await session.execute(_SUCCEED, {**guard, "b_output": output, "b_artifacts": artifacts})
    return result.first()


async def fail(
    session: AsyncSession,
    job_id: uuid.UUID,
    attempt: int,
    *,
    error_code: str,
    error_message: str | None,
    processing_ms: float | None,
    logs: str | None = None,
) -> Row[Any] | None:
    """Record a failure if this attempt owns the job: the job's webhook fields, or None."""
    guard = {
        "b_job_id": job_id,
        "attempt": attempt,
        "b_processing_ms": processing_ms,
        "b_logs": logs,
        "now": utcnow(),
    }
    result = await session.execute(
        _FAIL, {**guard, "b_error_code": error_code, "b_error_message": error_message}
    )
    return result.first()


async def rewrite_output(session: AsyncSession, job_id: uuid.UUID, output: dict[str, Any]) -> None:
    await session.execute(_OUTPUT, {"b_job_id": job_id, "b_output": output})


async def expired_leases(session: AsyncSession) -> list[tuple[uuid.UUID, str, int]]:
    """Running jobs whose lease ran out, in the lock order (user, then id)."""
    rows = await session.execute(
        select(Job.id, Job.model_slug, Job.attempts)
        .where(Job.status == JobStatus.running, Job.lease_expires_at < utcnow())
        .order_by(Job.user_id, Job.id)
    )
    return [(job_id, slug, attempts) for job_id, slug, attempts in rows]


async def queued_jobs(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    rows = await session.execute(
        select(Job.id, Job.model_slug).where(Job.status == JobStatus.queued).order_by(Job.created_at)
    )
    return [(job_id, slug) for job_id, slug in rows]


async def count_queued_of(session: AsyncSession, model_slug: str, *, at_most: int) -> int:
    """How many jobs of the model are queued, counting no further than ``at_most``."""
    queued = select(Job.id).where(Job.status == JobStatus.queued, Job.model_slug == model_slug).limit(at_most)
    return await session.scalar(select(func.count()).select_from(queued.subquery())) or 0


async def count_queued(session: AsyncSession) -> dict[str, int]:
    """Queued jobs per model, in one grouped COUNT."""
    rows = await session.execute(
        select(Job.model_slug, func.count()).where(Job.status == JobStatus.queued).group_by(Job.model_slug)
    )
    return {slug: int(count) for slug, count in rows}


# -- reads --------------------------------------------------------------------------------------


async def get(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """The job as the database has it now (not as this session last saw it)."""
    return await session.get(Job, job_id, populate_existing=True)


_OWNED_ROW = select(_jobs).where(
    _jobs.c.id == bindparam("b_job_id"), _jobs.c.user_id == bindparam("b_user_id")
)


async def read_owned(session: AsyncSession, user_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
    """The job's row now if ``user_id`` owns it, as a ``Job`` of no session (a read, nothing to
    change): one Core SELECT, none of the session's identity map (a poll makes many of these)."""
    row = (await session.execute(_OWNED_ROW, {"b_job_id": job_id, "b_user_id": user_id})).first()
    return None if row is None else Job(**row._mapping)


_OWNED_BY_DRIVER = DriverStatement(_OWNED_ROW)
_JSON_COLUMNS = tuple(column.name for column in _jobs.columns if isinstance(column.type, JSON))


async def read_owned_directly(
    connection: asyncpg.Connection, user_id: uuid.UUID, job_id: uuid.UUID
) -> Job | None:
    """:func:`read_owned` on a PostgreSQL driver connection (``Database.driver``), past
    SQLAlchemy's session and result layers (every long poll reads its job once or twice)."""
    rows = await _OWNED_BY_DRIVER.fetch(connection, {"b_job_id": job_id, "b_user_id": user_id})
    if not rows:
        return None
    values = dict(rows[0])
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    return Job(**values)


async def many(session: AsyncSession, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Job]:
    """These jobs as this transaction leaves them."""
    rows = await session.scalars(
        select(Job).where(Job.id.in_(job_ids)).execution_options(populate_existing=True)
    )
    return {job.id: job for job in rows}


async def page_of(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
    status: JobStatus | None = None,
    model_slug: str | None = None,
) -> tuple[list[Job], int]:
    """A user's jobs newest first, by offset, and how many match in all."""
    where = [Job.user_id == user_id]
    if status is not None:
        where.append(Job.status == status)
    if model_slug is not None:
        where.append(Job.model_slug == model_slug)
    total = await session.scalar(select(func.count()).select_from(Job).where(*where))
    rows = await session.scalars(
        select(Job).where(*where).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), total or 0


async def keyset_page(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    older: bool,
    limit: int,
) -> list[Job]:
    """Up to ``limit`` of a user's jobs next to the place ``after`` (created_at, id) in their
    newest-first order: the older ones (newest first), or the newer ones (oldest first)."""
    where = [Job.user_id == user_id]
    if older:
        if after is not None:
            at, job_id = after
            where.append(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < job_id)))
        order = (Job.created_at.desc(), Job.id.desc())
    else:
        assert after is not None
        at, job_id = after
        where.append(or_(Job.created_at > at, and_(Job.created_at == at, Job.id > job_id)))
        order = (Job.created_at.asc(), Job.id.asc())
    return list(await session.scalars(select(Job).where(*where).order_by(*order).limit(limit)))


async def runs_per_model(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    rows = await session.execute(
        select(Job.model_slug, func.count()).where(Job.user_id == user_id).group_by(Job.model_slug)
    )
    return {slug: count for slug, count in rows}


# -- writes of the API's path -------------------------------------------------------------------


_MARK_PUBLISHED = (
    update(_jobs)
    .where(
        _jobs.c.id.in_(bindparam("ids", expanding=True)),
        _jobs.c.status == JobStatus.queued,
        _jobs.c.attempts == bindparam("b_attempts"),
        _jobs.c.published_at.is_(None),
    )
    .values(published_at=bindparam("b_at"))
)


async def mark_published(
    session: AsyncSession, job_ids: list[uuid.UUID], attempts: int, at: datetime
) -> None:
    """Record the broker's confirmation of these jobs' messages (of this attempt, still queued)."""
    # Every API process runs this a few times a second under load: the statement is built once.
    await session.execute(_MARK_PUBLISHED, {"ids": job_ids, "b_attempts": attempts, "b_at": at})


async def unconfirmed(
    session: AsyncSession, created_before: datetime, limit: int
) -> list[tuple[uuid.UUID, str, int]]:
    """Queued jobs whose message the broker never confirmed, oldest first."""
    rows = await session.execute(
        select(Job.id, Job.model_slug, Job.attempts)
        .where(
            Job.status == JobStatus.queued,
            Job.published_at.is_(None),
            # Requeued jobs have no fresh created_at: the lease they lost is older still.
            Job.created_at < created_before,
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return [(job_id, slug, attempts) for job_id, slug, attempts in rows]


# -- retention ----------------------------------------------------------------------------------


async def expire_files(
    session: AsyncSession, finished_before: datetime, now: datetime, *, limit: int
) -> list[tuple[uuid.UUID, str | None, list[str]]]:
    """Record that the files of up to ``limit`` jobs finished before ``finished_before`` expired
    (oldest first); each such job's id, input file key and artifact names, for the caller to
    delete once this commits. Only the jobs this statement marked are returned (a concurrent sweep
    marks the others). The rows keep everything else: status, cost, result.

    Unfinished jobs have no ``finished_at`` and are never chosen.
    """
    oldest = (
        select(_jobs.c.id)
        .where(_jobs.c.files_expired_at.is_(None), _jobs.c.finished_at < finished_before)
        .order_by(_jobs.c.finished_at)
        .limit(limit)
    )
    rows = await session.execute(
        update(_jobs)
        # Checked again on the row itself: PostgreSQL re-reads a row a concurrent sweep changed.
        .where(_jobs.c.id.in_(oldest), _jobs.c.files_expired_at.is_(None))
        .values(files_expired_at=now)
        .returning(_jobs.c.id, _jobs.c.input_file, _jobs.c.artifacts)
    )
    return [(job_id, input_file, sorted(artifacts or {})) for job_id, input_file, artifacts in rows]
