"""The admin statistics page over a chosen period, and the chart data it draws from the statistics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import AppError
from mlservice.history import service as history
from mlservice.history import statistics
from mlservice.history.schemas import ModelStatistics, Statistics
from mlservice.web import admin_charts as charts
from mlservice.web.admin.formatting import admin_page
from mlservice.web.admin.inputs import InputProblem, parse_moment
from mlservice.web.deps import PageAdmin, PageWallet

router = APIRouter(prefix="/admin", include_in_schema=False)

WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
WINDOW_NAMES = {"24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom"}

REQUEST_SERIES = [
    charts.Series("ok", "Accepted"),
    charts.Series("failed", "Failed"),
    charts.Series("rejected", "Rejected"),
]
PERCENTILE_SERIES = [charts.Series("p50", "p50"), charts.Series("p95", "p95"), charts.Series("p99", "p99")]
RATE_SERIES = [charts.Series("failed", "Job error rate"), charts.Series("rejected", "Rejection rate")]
COUNT_SERIES = [charts.Series("ok", "Jobs")]


def _model_name(stats: ModelStatistics) -> str:
    return stats.model if stats.model is not None else "(no model named)"


def _bucket_label(bucket: statistics.TimeBucket, size: statistics.Bucket, first: bool) -> str:
    start = bucket.start
    if size is statistics.Bucket.day:
        return start.strftime("%d %b")
    return start.strftime("%d %b %H:%M" if first or start.hour == 0 else "%H:%M")


def _bucket_heading(bucket: statistics.TimeBucket, size: statistics.Bucket) -> str:
    if size is statistics.Bucket.day:
        return bucket.start.strftime("%Y-%m-%d (UTC)")
    end = bucket.start + timedelta(seconds=size.seconds)
    return f"{bucket.start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC"


def requests_chart(series: Sequence[statistics.TimeBucket], size: statistics.Bucket) -> charts.Chart:
    return charts.stacked_columns(
        [
            charts.Column(
                _bucket_label(b, size, i == 0),
                _bucket_heading(b, size),
                (b.accepted - b.failed, b.failed, b.rejected),
            )
            for i, b in enumerate(series)
        ],
        REQUEST_SERIES,
    )


def latency_chart(stats: Statistics, metric: str) -> charts.Chart:
    groups = []
    for model in stats.models:
        summary = getattr(model, metric)
        if summary.count:
            groups.append(charts.Group(_model_name(model), (summary.p50, summary.p95, summary.p99)))
    return charts.horizontal_bars(groups, PERCENTILE_SERIES, fmt=charts.milliseconds)


def rates_chart(stats: Statistics) -> charts.Chart:
    groups = [
        charts.Group(_model_name(m), (m.error_rate, m.rejection_rate)) for m in stats.models if m.requests
    ]
    return charts.horizontal_bars(groups, RATE_SERIES, fmt=charts.percent, maximum=1.0)


def predictions_charts(stats: Statistics) -> list[tuple[ModelStatistics, charts.Chart]]:
    return [
        (
            m,
            charts.horizontal_bars(
                [charts.Group(label, (count,)) for label, count in m.predictions.items()],
                COUNT_SERIES,
                bar_height=18,
            ),
        )
        for m in stats.models
        if m.predictions
    ]


def _period(window: str, since: str, until: str) -> tuple[datetime, datetime]:
    if window in WINDOWS:
        return history.check_period(None, None, WINDOWS[window])
    start = parse_moment(since, "From")
    end = parse_moment(until, "To", end_of_day=True)
    if start is None:
        raise InputProblem("From: enter the first day of the period.")
    return history.check_period(start, end, WINDOWS["24h"])


@router.get("/stats", response_class=HTMLResponse)
async def stats_page(
    request: Request,
    admin: PageAdmin,
    wallet: PageWallet,
    session: SessionDep,
    components: ComponentsDep,
    window: str = "24h",
    since: str = "",
    until: str = "",
) -> Response:
    window = window if window in WINDOW_NAMES else "24h"
    context: dict[str, Any] = {
        "window": window,
        "windows": WINDOW_NAMES,
        "since_text": since.strip()[:40],
        "until_text": until.strip()[:40],
        "problem": None,
        "stats": None,
    }
    try:
        start, end = _period(window, since, until)
        size = statistics.bucket_for(start, end)
        series = await statistics.requests_over_time(session, start, end, size)
    except (InputProblem, history.InvalidPeriod) as exc:
        context["problem"] = exc.message if isinstance(exc, AppError) else str(exc)
        return admin_page(
            request, "stats.html", admin=admin, wallet=wallet, section="stats", status_code=422, **context
        )
    found = await statistics.compute(session, components.predictors, start, end)
    context.update(
        stats=found,
        start=start,
        end=end,
        bucket=size,
        series=series,
        series_headings=[_bucket_heading(b, size) for b in series],
        requests_chart=requests_chart(series, size),
        processing_chart=latency_chart(found, "processing_ms"),
        queue_chart=latency_chart(found, "queue_ms"),
        rates_chart=rates_chart(found),
        predictions=predictions_charts(found),
        model_name=_model_name,
    )
    return admin_page(request, "stats.html", admin=admin, wallet=wallet, section="stats", **context)
