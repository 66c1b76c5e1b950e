"""The SQL of live jobs: ending a job that has not finished (a cancel, a deadline), the progress
a running attempt reports, and the statuses a worker checks of the jobs it runs.

Every write is guarded: by the statuses a job may still leave, or by the attempt that owns it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.jobs.tables import Job, JobStatus
from mlservice.types import utcnow

_jobs = cast(Table, Job.__table__)
_OWNED = (
    _jobs.c.id == bindparam("b_job_id"),
    _jobs.c.status == JobStatus.running,
    _jobs.c.attempts == bindparam("attempt"),
)


async def end_unfinished(
    session: AsyncSession,
    job_id: uuid.UUID,
    status: JobStatus,
    *,
    only: JobStatus | None = None,
) -> bool:
    """End a job that has not finished (queued or running; ``only``: in that status) with
    ``status`` (canceled, aborted); False when it finished meanwhile. A worker still running it
    then owns nothing: whatever it produces is dropped by the guard on its outcome."""
    unfinished = [only] if only is not None else [JobStatus.queued, JobStatus.running]
    result = await session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(unfinished))
        .values(status=status, finished_at=utcnow(), lease_expires_at=None)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def overdue(
    session: AsyncSession, now: datetime, *, limit: int
) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
    """Unfinished jobs whose deadline (``cancel_at``) passed: (id, user, status), in the lock
    order (user, then id), at most ``limit``."""
    rows = await session.execute(
        select(Job.id, Job.user_id, Job.status)
        .where(
            Job.cancel_at.is_not(None),
            Job.status.in_([JobStatus.queued, JobStatus.running]),
            Job.cancel_at <= now,
        )
        .order_by(Job.user_id, Job.id)
        .limit(limit)
    )
    return [(job_id, user_id, status) for job_id, user_id, status in rows]


_PROGRESS = (
    update(_jobs)
    .where(*_OWNED)
    .values(progress=bindparam("b_progress"), progress_message=bindparam("b_progress_message"))
)


async def record_progress(
    session: AsyncSession, job_id: uuid.UUID, attempt: int, fraction: float, message: str | None
) -> bool:
    """Write the progress the attempt that owns the job reported; False if it owns it no more."""
    result = await session.execute(
        _PROGRESS,
        {"b_job_id": job_id, "attempt": attempt, "b_progress": fraction, "b_progress_message": message},
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def statuses(session: AsyncSession, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[str, int]]:
    """The status and attempt number of each of these jobs."""
    rows = await session.execute(select(Job.id, Job.status, Job.attempts).where(Job.id.in_(sorted(job_ids))))
    return {job_id: (status, attempts) for job_id, status, attempts in rows}
