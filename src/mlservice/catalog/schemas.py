from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    title: str
    task: str
    description: str
    input_kind: str
    price: int = Field(description="Credits per run")
    enabled: bool
    params_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of `params`")
    updated_at: datetime


class AdminModelRead(ModelRead):
    max_batch_size: int = Field(description="Most jobs a worker runs in one batch")
    max_wait_ms: int | None = Field(description="How long a worker waits to fill a batch")
    batch_size_limit: int | None = Field(
        description="The most the installed predictor takes per batch (null: not installed here)"
    )
    max_queued_jobs: int | None = Field(
        description="The most jobs its queue holds (null: the server's default; 0: no cap)"
    )
    queue_cap: int = Field(description="The cap in force: max_queued_jobs or the server's default (0: none)")


MAX_WAIT_MS = 1000


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: int | None = Field(default=None, ge=0, le=1_000_000)
    enabled: bool | None = None
    max_batch_size: int | None = Field(
        default=None, ge=1, description="1 up to the predictor's limit; workers apply it when they start"
    )
    max_wait_ms: int | None = Field(
        default=None, ge=0, le=MAX_WAIT_MS, description="Workers apply it when they start"
    )
    max_queued_jobs: int | None = Field(
        default=None,
        ge=0,
        le=10_000_000,
        description="Submits past it are refused with 503 model_queue_full; null: back to the server's "
        "default (MLSERVICE_MAX_QUEUED_JOBS_PER_MODEL); 0: no cap",
    )

    @model_validator(mode="after")
    def something_to_change(self) -> ModelUpdate:
        if all(value is None for _, value in self) and "max_queued_jobs" not in self.model_fields_set:
            raise ValueError(
                "give at least one of `price`, `enabled`, `max_batch_size`, `max_wait_ms`, `max_queued_jobs`"
            )
        return self
