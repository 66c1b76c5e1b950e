"""Reading and pruning the request history; job outcomes are joined in from ``jobs`` when read."""

from __future__ import annotations

import base64
import binascii
import enum
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError
from mlservice.history.schemas import HistoryItem, HistoryJob, ResultSummary
from mlservice.history.tables import PredictionRequest
from mlservice.jobs.schemas import JobError
from mlservice.jobs.tables import Job, JobStatus
from mlservice.orm import delete_some
from mlservice.predictors.base import Predictor
from mlservice.users.tables import User

JsonPath = tuple[str | int, ...]
# The library declares `User.email` as a plain `str` to type checkers; this is its column.
USER_EMAIL: ColumnElement[str] = User.__table__.c.email


class InvalidCursor(AppError):
    status_code = 422
    code = "invalid_cursor"


class InvalidPeriod(AppError):
    status_code = 422
    code = "invalid_period"


class RequestStatus(enum.StrEnum):
    """A job status, or `rejected` for requests refused before a job existed."""

    queued = JobStatus.queued.value
    running = JobStatus.running.value
    succeeded = JobStatus.succeeded.value
    failed = JobStatus.failed.value
    canceled = JobStatus.canceled.value
    rejected = "rejected"


def as_utc(moment: datetime) -> datetime:
    """Query parameters without a zone are read as UTC."""
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise InvalidPeriod(f"{moment.isoformat()} is out of range in UTC.") from None


@dataclass(frozen=True)
class HistoryFilter:
    user_id: uuid.UUID | None = None
    email: str | None = None
    model: str | None = None
    status: RequestStatus | None = None
    http_status: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.user_id is not None:
            where.append(PredictionRequest.user_id == self.user_id)
        if self.email is not None:
            where.append(func.lower(USER_EMAIL) == self.email.strip().lower())
        if self.model is not None:
            where.append(PredictionRequest.model_slug == self.model)
        if self.status is RequestStatus.rejected:
            where.append(PredictionRequest.http_status >= 400)
        elif self.status is not None:
            where.append(Job.status == self.status.value)
        if self.http_status is not None:
            where.append(PredictionRequest.http_status == self.http_status)
        if self.since is not None:
            where.append(PredictionRequest.created_at >= as_utc(self.since))
        if self.until is not None:
            where.append(PredictionRequest.created_at < as_utc(self.until))
        return where


# -- cursors: the (created_at, id) of the last row of a page, opaque to clients ----------------------


def encode_cursor(created_at: datetime, row_id: int) -> str:
    raw = f"{as_utc(created_at).isoformat()}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, row_id = raw.partition("|")
        return as_utc(datetime.fromisoformat(moment)), int(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError, InvalidPeriod):
        raise InvalidCursor("This cursor is not one the history handed out.") from None


# -- result summaries -------------------------------------------------------------------------------


def dig(value: Any, path: JsonPath) -> Any:
    """The value at ``path`` (keys and list indexes) inside a JSON document, or None."""
    for step in path:
        if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, dict):
            value = value.get(step)
        else:
            return None
    return value


def summarize(predictor: type[Predictor] | None, output: Mapping[str, Any] | None) -> ResultSummary | None:
    if output is None or predictor is None:
        return None
    label = dig(output, predictor.result_label) if predictor.result_label else None
    items = dig(output, predictor.result_items) if predictor.result_items else None
    return ResultSummary(
        label=None if label is None else str(label),
        items=len(items) if isinstance(items, list) else None,
    )


def queue_ms(created_at: datetime | None, started_at: datetime | None) -> float | None:
    if created_at is None or started_at is None:
        return None
    return (started_at - created_at) / timedelta(milliseconds=1)


# -- reading and deleting ---------------------------------------------------------------------------


@dataclass
class RequestPage:
    items: list[HistoryItem]
    next_cursor: str | None


_JOB_COLUMNS = tuple(
    getattr(Job, name).label(f"job_{name}")
    for name in (
        "id",
        "status",
        "attempts",
        "cost",
        "created_at",
        "started_at",
        "finished_at",
        "processing_ms",
        "output",
        "error_code",
        "error_message",
    )
)


def _item(row: Any, predictors: Mapping[str, type[Predictor]]) -> HistoryItem:
    request: PredictionRequest = row.PredictionRequest
    job = None
    if row.job_id is not None:
        error = None
        if row.job_error_code:
            error = JobError(code=row.job_error_code, message=row.job_error_message or "")
        job = HistoryJob(
            id=row.job_id,
            status=row.job_status,
            attempts=row.job_attempts,
            cost=row.job_cost,
            started_at=row.job_started_at,
            finished_at=row.job_finished_at,
            processing_ms=row.job_processing_ms,
            queue_ms=queue_ms(row.job_created_at, row.job_started_at),
            result=summarize(predictors.get(request.model_slug or ""), row.job_output),
            error=error,
        )
    return HistoryItem(
        id=request.id,
        created_at=request.created_at,
        user_id=request.user_id,
        email=row.email,
        model=request.model_slug,
        http_status=request.http_status,
        error_code=request.error_code,
        input_bytes=request.input_bytes,
        image_width=request.image_width,
        image_height=request.image_height,
        request_id=request.request_id,
        replayed=request.replayed,
        job=job,
    )


async def list_requests(
    session: AsyncSession,
    predictors: Mapping[str, type[Predictor]],
    filters: HistoryFilter,
    *,
    limit: int,
    cursor: str | None = None,
) -> RequestPage:
    """Requests newest first, ``limit`` at a time; keyset pagination stays stable as rows arrive."""
    where = filters.conditions()
    if cursor is not None:
        moment, row_id = decode_cursor(cursor)
        where.append(
            or_(
                PredictionRequest.created_at < moment,
                and_(PredictionRequest.created_at == moment, PredictionRequest.id < row_id),
            )
        )
    stmt = (
        select(PredictionRequest, USER_EMAIL, *_JOB_COLUMNS)
        .join(User, User.id == PredictionRequest.user_id)
        .outerjoin(Job, Job.id == PredictionRequest.job_id)
        .where(*where)
        .order_by(PredictionRequest.created_at.desc(), PredictionRequest.id.desc())
        .limit(limit + 1)
    )
    rows: Sequence[Any] = (await session.execute(stmt)).all()
    items = [_item(row, predictors) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return RequestPage(items, next_cursor)


async def delete_requests(session: AsyncSession, *, before: datetime | None = None) -> int:
    """Delete history rows (older than ``before``, or all); jobs and the ledger are untouched."""
    stmt = delete(PredictionRequest)
    if before is not None:
        stmt = stmt.where(PredictionRequest.created_at < as_utc(before))
    result = await session.execute(stmt.execution_options(synchronize_session=False))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_oldest(session: AsyncSession, created_before: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` history rows older than ``created_before`` (retention, one batch)."""
    return await delete_some(
        session, PredictionRequest.id, PredictionRequest.created_at < created_before, limit=limit
    )


def check_period(
    since: datetime | None, until: datetime | None, default: timedelta
) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC; by default the ``default`` up to now."""
    end = as_utc(until) if until is not None else datetime.now(UTC)
    try:
        start = as_utc(since) if since is not None else end - default
    except OverflowError:
        raise InvalidPeriod(f"There is no period of {default} before {end.isoformat()}.") from None
    if start >= end:
        raise InvalidPeriod("`since` must be before `until`.")
    return start, end
