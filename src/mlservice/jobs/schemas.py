from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class JobProgress(BaseModel):
    fraction: float = Field(ge=0, le=1, description="How far the model is, from 0 to 1")
    message: str | None = Field(default=None, description="What it is doing, in a few words")


class JobSummary(BaseModel):
    """A job in a listing: no input details, no result."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    model: str
    status: str
    cost: int
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    processing_ms: float | None
    error_code: str | None
    progress: JobProgress | None = Field(
        default=None, description="What the model last reported while running (null if nothing)"
    )
    cancel_at: datetime | None = Field(
        default=None,
        description="The deadline `Cancel-After` set: queued then, `aborted`; running, `canceled`",
    )


class JobError(BaseModel):
    code: str
    message: str


class ArtifactRead(BaseModel):
    name: str
    media_type: str
    filename: str
    bytes: int
    url: str


class JobRead(JobSummary):
    params: dict[str, Any]
    input: dict[str, Any]
    output: dict[str, Any] | None
    artifacts: list[ArtifactRead]
    error: JobError | None
    files_expired_at: datetime | None = Field(
        default=None,
        description="When the job's input and artifact files were removed (retention): fetching them "
        "then answers 410 `files_expired`. The job, its result and its cost stay. Null while kept.",
    )
    logs: str | None = Field(default=None, description="The model's log lines for this job (once finished)")


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int
