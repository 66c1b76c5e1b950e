"""One attempt at a job, as the executor and its telemetry see it: what a claim returned, what the
model produced, and what becomes of the job's message."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mlservice.predictors.base import PredictOutput


@dataclass
class Claimed:
    id: uuid.UUID
    attempt: int
    user_id: uuid.UUID
    input_file: str | None
    input_text: str | None
    params: dict[str, Any]
    # For the job's log events and metrics (read by the claim itself, no query of their own).
    created_at: datetime | None = None
    started_at: datetime | None = None
    cost: int = 0
    request_id: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] | None = None
    # The deadline its ``Cancel-After`` set: past it the job is canceled.
    cancel_at: datetime | None = None


@dataclass
class Outcome:
    prediction: PredictOutput | None = None
    error_code: str | None = None
    error_message: str | None = None
    processing_ms: float | None = None
    # The model (not the input) failed: worth another attempt, up to the attempt limit.
    retryable: bool = False
    # The predictor's log lines while it ran this job.
    logs: str | None = None
    # The job was canceled while it ran: there is nothing to record (its cancel did).
    canceled: bool = False


class Disposition(enum.StrEnum):
    """What to do with a job's message once its attempt is settled in the database."""

    ack = "ack"  # finished (or not ours to run): drop the message
    retry = "retry"  # back to queued for another attempt: deliver the message again
    dead_letter = "dead_letter"  # failed on its last attempt: park the message for inspection
