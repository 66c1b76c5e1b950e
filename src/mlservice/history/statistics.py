"""Statistics over the request history and the jobs it created, per model and overall.

Counts, means and distributions are aggregated by the database. Percentiles interpolate linearly
between the two nearest ranks (numpy's default ``method="linear"``): ``percentile_cont`` on
PostgreSQL, which may differ from numpy in the last bit (it interpolates from the lower rank, numpy
from the nearer one). SQLite has no percentile aggregate and its date functions keep only
milliseconds, so there the durations are fetched and interpolated here, exactly as numpy does.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    Select,
    case,
    cast,
    extract,
    func,
    literal,
    null,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.history.schemas import (
    DurationSummary,
    JobCounts,
    ModelStatistics,
    SizeSummary,
    Statistics,
)
from mlservice.history.service import InvalidPeriod, queue_ms
from mlservice.history.tables import PredictionRequest
from mlservice.jobs.tables import Job, JobStatus
from mlservice.predictors.base import Predictor

PERCENTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
# The most frequent answers listed per model; the rest would be a long tail (film titles).
MAX_PREDICTIONS = 20
SIZES = ("input_bytes", "image_width", "image_height")

Group = str | None  # a model slug; None: requests that named no model


def percentile(ordered: Sequence[float], q: float) -> float:
    """``numpy.percentile(values, 100 * q, method="linear")`` of values sorted ascending."""
    n = len(ordered)
    position = (n - 1) * q
    lower = math.floor(position)
    if lower >= n - 1:
        return ordered[-1]
    a, b = ordered[lower], ordered[lower + 1]
    t = position - lower
    # numpy's lerp: from the nearer end, so that t near 1 gives b exactly.
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def summarize_durations(values: Sequence[float]) -> DurationSummary:
    if not values:
        return DurationSummary(count=0, mean=None, p50=None, p95=None, p99=None, max=None)
    ordered = sorted(values)
    return DurationSummary(
        count=len(ordered),
        mean=math.fsum(ordered) / len(ordered),
        max=ordered[-1],
        **{name: percentile(ordered, q) for name, q in PERCENTILES.items()},
    )


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


# Any select, whatever its columns (SQLAlchemy 2.1 types a Select by the tuple of its columns).
_Stmt = TypeVar("_Stmt", bound="Select[*tuple[Any, ...]]")


def _from_window(stmt: _Stmt, window: list[ColumnElement[bool]]) -> _Stmt:
    return (
        stmt.select_from(PredictionRequest).outerjoin(Job, Job.id == PredictionRequest.job_id).where(*window)
    )


def _grouped(stmt: _Stmt, by_model: bool) -> _Stmt:
    return stmt.group_by(PredictionRequest.model_slug) if by_model else stmt


def _model_column(by_model: bool) -> ColumnElement[Any]:
    return PredictionRequest.model_slug.label("model") if by_model else null().label("model")


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def _counts(
    session: AsyncSession, window: list[ColumnElement[bool]], by_model: bool
) -> dict[Group, dict[str, Any]]:
    columns: list[ColumnElement[Any]] = [
        _model_column(by_model),
        func.count().label("requests"),
        _count_if(PredictionRequest.http_status < 400).label("accepted"),
        _count_if(PredictionRequest.http_status >= 400).label("rejected"),
        *(_count_if(Job.status == status.value).label(f"jobs_{status.value}") for status in JobStatus),
    ]
    for name in SIZES:
        column = getattr(PredictionRequest, name)
        columns += [
            func.count(column).label(f"{name}_count"),
            func.avg(column).label(f"{name}_mean"),
            func.min(column).label(f"{name}_min"),
            func.max(column).label(f"{name}_max"),
        ]
    rows = (await session.execute(_grouped(_from_window(select(*columns), window), by_model))).mappings()
    return {row["model"]: dict(row) for row in rows}


async def _rejections(
    session: AsyncSession, window: list[ColumnElement[bool]]
) -> dict[Group, dict[str, int]]:
    stmt = _from_window(
        select(PredictionRequest.model_slug, PredictionRequest.error_code, func.count()),
        [*window, PredictionRequest.http_status >= 400],
    ).group_by(PredictionRequest.model_slug, PredictionRequest.error_code)
    found: dict[Group, dict[str, int]] = defaultdict(dict)
    for slug, code, count in await session.execute(stmt):
        found[slug][code or "unknown"] = int(count)
    return found


def _queue_ms_expression() -> ColumnElement[float]:
    # An interval's epoch is exact (numeric) on PostgreSQL; the float is taken at the end.
    return cast(extract("epoch", Job.started_at - Job.created_at) * 1000, Float)


async def _durations_postgresql(
    session: AsyncSession, window: list[ColumnElement[bool]], by_model: bool
) -> dict[Group, dict[str, DurationSummary]]:
    columns: list[ColumnElement[Any]] = [_model_column(by_model)]
    metrics = {"processing_ms": Job.processing_ms, "queue_ms": _queue_ms_expression()}
    for name, expression in metrics.items():
        columns += [
            func.count(expression).label(f"{name}_count"),
            func.avg(expression).label(f"{name}_mean"),
            func.max(expression).label(f"{name}_max"),
            *(
                func.percentile_cont(q).within_group(expression).label(f"{name}_{label}")
                for label, q in PERCENTILES.items()
            ),
        ]
    stmt = _grouped(_from_window(select(*columns), [*window, Job.started_at.is_not(None)]), by_model)
    found: dict[Group, dict[str, DurationSummary]] = {}
    for row in (await session.execute(stmt)).mappings():
        found[row["model"]] = {
            name: DurationSummary(
                count=row[f"{name}_count"],
                mean=_float(row[f"{name}_mean"]),
                max=_float(row[f"{name}_max"]),
                **{label: _float(row[f"{name}_{label}"]) for label in PERCENTILES},
            )
            for name in metrics
        }
    return found


async def _durations_sqlite(
    session: AsyncSession, window: list[ColumnElement[bool]]
) -> tuple[dict[Group, dict[str, DurationSummary]], dict[str, DurationSummary]]:
    stmt = _from_window(
        select(PredictionRequest.model_slug, Job.processing_ms, Job.created_at, Job.started_at),
        [*window, Job.started_at.is_not(None)],
    )
    values: dict[Group, dict[str, list[float]]] = defaultdict(lambda: {"processing_ms": [], "queue_ms": []})
    every: dict[str, list[float]] = {"processing_ms": [], "queue_ms": []}
    for slug, processing, created_at, started_at in await session.execute(stmt):
        waited = queue_ms(created_at, started_at)
        for name, value in (("processing_ms", processing), ("queue_ms", waited)):
            if value is not None:
                values[slug][name].append(float(value))
                every[name].append(float(value))
    per_model = {
        slug: {name: summarize_durations(found) for name, found in metrics.items()}
        for slug, metrics in values.items()
    }
    return per_model, {name: summarize_durations(found) for name, found in every.items()}


async def _predictions(
    session: AsyncSession, window: list[ColumnElement[bool]], predictors: Mapping[str, type[Predictor]]
) -> dict[Group, dict[str, int]]:
    labels = {
        slug: Job.output[cls.result_label].as_string()
        for slug, cls in predictors.items()
        if cls.result_label is not None
    }
    if not labels:
        return {}
    answers = _from_window(
        select(
            PredictionRequest.model_slug.label("model"),
            case(labels, value=PredictionRequest.model_slug).label("label"),
        ),
        [*window, Job.status == JobStatus.succeeded.value],
    ).subquery()
    # Grouped outside: PostgreSQL cannot match a GROUP BY to a select expression holding parameters.
    stmt = (
        select(answers.c.model, answers.c.label, func.count().label("n"))
        .where(answers.c.label.is_not(None))
        .group_by(answers.c.model, answers.c.label)
        .order_by(answers.c.model, func.count().desc(), answers.c.label)
    )
    found: dict[Group, dict[str, int]] = defaultdict(dict)
    for slug, label, count in await session.execute(stmt):
        if len(found[slug]) < MAX_PREDICTIONS:
            found[slug][label] = int(count)
    return found


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _model_statistics(
    slug: Group,
    counts: Mapping[str, Any],
    rejections: Mapping[str, int],
    durations: Mapping[str, DurationSummary] | None,
    predictions: Mapping[str, int],
) -> ModelStatistics:
    jobs = JobCounts(**{status.value: int(counts[f"jobs_{status.value}"]) for status in JobStatus})
    requests, rejected = int(counts["requests"]), int(counts["rejected"])
    empty = summarize_durations([])
    durations = durations or {}
    sizes = {
        name: SizeSummary(
            count=counts[f"{name}_count"],
            mean=_float(counts[f"{name}_mean"]),
            min=counts[f"{name}_min"],
            max=counts[f"{name}_max"],
        )
        for name in SIZES
    }
    return ModelStatistics(
        model=slug,
        requests=requests,
        accepted=int(counts["accepted"]),
        rejected=rejected,
        rejection_rate=_ratio(rejected, requests),
        rejections=dict(sorted(rejections.items(), key=lambda item: (-item[1], item[0]))),
        jobs=jobs,
        error_rate=_ratio(jobs.failed, jobs.succeeded + jobs.failed),
        processing_ms=durations.get("processing_ms", empty),
        queue_ms=durations.get("queue_ms", empty),
        predictions=dict(predictions),
        **sizes,
    )


async def compute(
    session: AsyncSession,
    predictors: Mapping[str, type[Predictor]],
    since: datetime,
    until: datetime,
) -> Statistics:
    """Requests that arrived in ``[since, until)`` (replays excluded) and their jobs as they are now."""
    window: list[ColumnElement[bool]] = [
        PredictionRequest.created_at >= since,
        PredictionRequest.created_at < until,
        PredictionRequest.replayed.is_(False),
    ]
    per_model = await _counts(session, window, by_model=True)
    (overall,) = (await _counts(session, window, by_model=False)).values()
    rejections = await _rejections(session, window)
    if session.get_bind().dialect.name == "postgresql":
        durations = await _durations_postgresql(session, window, by_model=True)
        (all_durations,) = (await _durations_postgresql(session, window, by_model=False)).values()
    else:
        durations, all_durations = await _durations_sqlite(session, window)
    predictions = await _predictions(session, window, predictors)

    all_rejections: dict[str, int] = defaultdict(int)
    for codes in rejections.values():
        for code, count in codes.items():
            all_rejections[code] += count
    models = [
        _model_statistics(
            slug, counts, rejections.get(slug, {}), durations.get(slug), predictions.get(slug, {})
        )
        for slug, counts in sorted(per_model.items(), key=lambda item: (item[0] is None, item[0] or ""))
    ]
    return Statistics(
        since=since,
        until=until,
        overall=_model_statistics(None, overall, all_rejections, all_durations, {}),
        models=models,
    )


# -- requests over time ------------------------------------------------------------------------------


class Bucket(enum.StrEnum):
    """How finely :func:`requests_over_time` slices a period (UTC hours or UTC days)."""

    hour = "hour"
    day = "day"

    @property
    def seconds(self) -> int:
        return 3600 if self is Bucket.hour else 86400


# A series longer than this is no longer a chart anyone reads; it is refused, not computed.
MAX_BUCKETS = 1000


@dataclass(frozen=True)
class TimeBucket:
    """Requests that arrived in ``[start, start + bucket)`` (clipped to the period asked for).

    ``accepted`` counts the requests that created a job, ``failed`` those of them whose job has
    failed by now (a part of ``accepted``), ``rejected`` the requests refused with an error status.
    """

    start: datetime
    requests: int
    accepted: int
    rejected: int
    failed: int


def bucket_for(since: datetime, until: datetime) -> Bucket:
    """Hours for periods up to three days, days beyond."""
    return Bucket.hour if until - since <= timedelta(days=3) else Bucket.day


def _bucket_number(dialect: str, width: int) -> ColumnElement[int]:
    """Which bucket a request falls in: whole ``width`` seconds since the Unix epoch, in SQL."""
    if dialect == "postgresql":
        # An absolute instant: the epoch of a timestamptz does not depend on the session's zone.
        epoch = extract("epoch", PredictionRequest.created_at)
        return cast(func.floor(epoch / literal(width, Integer)), BigInteger)
    # SQLite keeps UTC text ("YYYY-MM-DD HH:MM:SS.ffffff") and '%s' reads it as UTC seconds, but
    # rounded to the millisecond: 10:59:59.9999 would land in the 11:00 bucket. The whole seconds
    # alone are exact, and integer division of the (positive) result floors it.
    whole_seconds = func.substr(PredictionRequest.created_at, 1, 19)
    return cast(func.strftime("%s", whole_seconds), Integer) // width


async def requests_over_time(
    session: AsyncSession, since: datetime, until: datetime, bucket: Bucket
) -> list[TimeBucket]:
    """Requests in ``[since, until)`` (replays excluded, as in :func:`compute`) per UTC hour or day,
    oldest first, with a zero bucket wherever nothing arrived."""
    width = bucket.seconds
    first, last = int(since.timestamp()) // width, math.ceil(until.timestamp() / width) - 1
    if last - first + 1 > MAX_BUCKETS:
        raise InvalidPeriod(
            f"That is more than {MAX_BUCKETS} {bucket.value}s; choose a shorter period or a coarser bucket."
        )
    window: list[ColumnElement[bool]] = [
        PredictionRequest.created_at >= since,
        PredictionRequest.created_at < until,
        PredictionRequest.replayed.is_(False),
    ]
    rows = _from_window(
        select(
            _bucket_number(session.get_bind().dialect.name, width).label("slot"),
            PredictionRequest.http_status.label("http_status"),
            Job.status.label("job_status"),
        ),
        window,
    ).subquery()
    # Grouped outside: PostgreSQL cannot match a GROUP BY to a select expression holding parameters.
    stmt = (
        select(
            rows.c.slot,
            func.count().label("requests"),
            _count_if(rows.c.http_status < 400).label("accepted"),
            _count_if(rows.c.http_status >= 400).label("rejected"),
            _count_if(rows.c.job_status == JobStatus.failed.value).label("failed"),
        )
        .group_by(rows.c.slot)
        .order_by(rows.c.slot)
    )
    found = {int(row.slot): row for row in await session.execute(stmt)}
    series = []
    for slot in range(first, last + 1):
        row = found.get(slot)
        counts = (
            (int(row.requests), int(row.accepted), int(row.rejected), int(row.failed))
            if row
            else (0, 0, 0, 0)
        )
        series.append(TimeBucket(datetime.fromtimestamp(slot * width, UTC), *counts))
    return series
