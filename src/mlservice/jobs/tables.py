from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, Uuid, text
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base
from mlservice.types import UTCDateTime, utcnow


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"
    # Its deadline (``Cancel-After``) passed before any worker started it: it cost nothing.
    aborted = "aborted"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.aborted})
# Progress messages longer than this are cut (a predictor's, shown on one line).
PROGRESS_MESSAGE_CHARS = 200


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
        Index("ix_jobs_status_published_at", "status", "published_at"),
        # Only unfinished jobs: what the cap on a user's unfinished jobs counts at each submit.
        Index(
            "ix_jobs_unfinished_user_id",
            "user_id",
            postgresql_where=text("status IN ('queued', 'running')"),
            sqlite_where=text("status IN ('queued', 'running')"),
        ),
        # The retention sweep's: finished jobs whose files have not expired yet, oldest first.
        Index("ix_jobs_files_expired_at_finished_at", "files_expired_at", "finished_at"),
        # The deadline sweep's: unfinished jobs that must end by a given time.
        Index(
            "ix_jobs_unfinished_cancel_at",
            "cancel_at",
            postgresql_where=text("cancel_at IS NOT NULL AND status IN ('queued', 'running')"),
            sqlite_where=text("cancel_at IS NOT NULL AND status IN ('queued', 'running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    model_slug: Mapped[str] = mapped_column(String(64), ForeignKey("models.slug"))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    # The price at submit: later price changes never alter it.
    cost: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    input_file: Mapped[str | None] = mapped_column(String(300))
    input_text: Mapped[str | None] = mapped_column(Text)
    output: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # name -> {"media_type", "filename", "bytes"}; the files live in storage under jobs/<id>/artifacts/
    artifacts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default=text("'{}'"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Float as the migration built it (SQLAlchemy 2.1 maps a bare float to Double)
    processing_ms: Mapped[float | None] = mapped_column(Float)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When a durable broker confirmed the job's message (NULL: not yet, so the relay republishes it).
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The id of the HTTP request that submitted the job: logs of its execution carry it too.
    request_id: Mapped[str | None] = mapped_column(String(64))
    # Where to POST news of the job, and which events ("start", "output", "logs", "completed").
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    webhook_events: Mapped[list[str] | None] = mapped_column(JSON)
    # Which API's shape the webhook bodies take ("api", "replicate"; see mlservice.webhooks).
    webhook_flavour: Mapped[str | None] = mapped_column(String(32))
    # When retention removed the job's input and artifact files (NULL: they are kept). Set before
    # the files go, so no row names a missing file without saying so; the row itself stays.
    files_expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The deadline a ``Cancel-After`` header set: queued then, the job is aborted; running, canceled.
    cancel_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # What the predictor last reported while running: a fraction in [0, 1] and a short message.
    progress: Mapped[float | None] = mapped_column(Float)
    progress_message: Mapped[str | None] = mapped_column(String(PROGRESS_MESSAGE_CHARS))
    # The predictor's log lines for this job (its last attempt), written with its outcome.
    logs: Mapped[str | None] = mapped_column(Text)
