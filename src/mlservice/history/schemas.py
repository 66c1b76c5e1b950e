from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from mlservice.jobs.schemas import JobError


class ResultSummary(BaseModel):
    label: str | None = Field(description="The answer the model named: top label, verdict, top title")
    items: int | None = Field(description="How many things the result lists (faces, matches, results)")


class HistoryJob(BaseModel):
    """How the request's job went, as it is now."""

    id: uuid.UUID
    status: str
    attempts: int
    cost: int
    started_at: datetime | None
    finished_at: datetime | None
    processing_ms: float | None = Field(description="Model run time of the last attempt")
    queue_ms: float | None = Field(description="From submission until a worker started the last attempt")
    result: ResultSummary | None
    error: JobError | None


class HistoryItem(BaseModel):
    id: int
    created_at: datetime = Field(description="When the request arrived")
    user_id: uuid.UUID
    email: str
    model: str | None = Field(description="The model slug as requested (null: the request named none)")
    http_status: int
    error_code: str | None = Field(description="Why the request was refused (null: accepted)")
    input_bytes: int | None
    image_width: int | None
    image_height: int | None
    request_id: str | None
    replayed: bool = Field(description="An Idempotency-Key retry answered with an earlier request's job")
    job: HistoryJob | None


class HistoryPage(BaseModel):
    items: list[HistoryItem] = Field(description="Newest first")
    limit: int
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) page; null at the end")


class HistoryDeleted(BaseModel):
    deleted: int


class DurationSummary(BaseModel):
    """Milliseconds; percentiles interpolate linearly (numpy's default ``method="linear"``)."""

    count: int
    mean: float | None
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class SizeSummary(BaseModel):
    count: int
    mean: float | None
    min: int | None
    max: int | None


class JobCounts(BaseModel):
    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0


class ModelStatistics(BaseModel):
    model: str | None = Field(description="The model slug; null for requests that named no model")
    requests: int = Field(description="Requests received (Idempotency-Key replays are not counted)")
    accepted: int = Field(description="Requests that created a job")
    rejected: int = Field(description="Requests refused with an error status")
    rejection_rate: float | None = Field(description="rejected / requests")
    rejections: dict[str, int] = Field(description="Refusals by error code")
    jobs: JobCounts = Field(description="The accepted requests' jobs by their current status")
    error_rate: float | None = Field(description="failed / (succeeded + failed): runs that ended in error")
    processing_ms: DurationSummary
    queue_ms: DurationSummary
    input_bytes: SizeSummary
    image_width: SizeSummary
    image_height: SizeSummary
    predictions: dict[str, int] = Field(
        description="Succeeded jobs by the answer they gave (top label, verdict...), most frequent first"
    )


class Statistics(BaseModel):
    since: datetime
    until: datetime
    overall: ModelStatistics = Field(
        description="All requests together (`model` null, no `predictions`: answers differ per model)"
    )
    models: list[ModelStatistics]
