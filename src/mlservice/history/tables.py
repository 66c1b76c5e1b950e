from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, SmallInteger, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base, BigIntPK
from mlservice.types import UTCDateTime, utcnow


class PredictionRequest(Base):
    """One ``POST /api/jobs`` as it was answered: accepted (with its job) or refused (with the code).

    Only what is known when the request is answered lives here; how the job went (status, times,
    result) is read from ``jobs`` when the history is read, so workers never write to this table.
    """

    __tablename__ = "prediction_requests"
    __table_args__ = (
        Index("ix_prediction_requests_created_at", "created_at"),
        Index("ix_prediction_requests_user_id_created_at", "user_id", "created_at"),
        Index("ix_prediction_requests_model_slug_created_at", "model_slug", "created_at"),
        Index("ix_prediction_requests_job_id", "job_id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    # When the request arrived (authenticated), not when the row was written.
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    # As the client sent it: not a foreign key, so unknown models and removed ones are kept too.
    model_slug: Mapped[str | None] = mapped_column(String(64))
    http_status: Mapped[int] = mapped_column(SmallInteger)
    error_code: Mapped[str | None] = mapped_column(String(64))
    # The uploaded file's size, or the text's in UTF-8; width and height when the input is an image.
    input_bytes: Mapped[int | None] = mapped_column(BigInteger)
    image_width: Mapped[int | None] = mapped_column(Integer)
    image_height: Mapped[int | None] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(64))
    job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, ForeignKey("jobs.id", ondelete="SET NULL"))
    # An Idempotency-Key retry answered with the first request's job: no new job, no new charge.
    replayed: Mapped[bool] = mapped_column(Boolean, default=False)
