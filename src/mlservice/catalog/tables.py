from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base
from mlservice.types import UTCDateTime, utcnow


class CatalogModel(Base):
    """A model users can run; seeded from the predictor registry, priced by administrators."""

    __tablename__ = "models"
    __table_args__ = (CheckConstraint("price >= 0", name="price_non_negative"),)

    slug: Mapped[str] = mapped_column(String(64), primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    input_kind: Mapped[str] = mapped_column(String(16))
    price: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Batching limits the workers take when they start: seeded from the predictor, set by admins.
    max_batch_size: Mapped[int] = mapped_column(Integer, default=1)
    # NULL only in rows older than this column, until the next catalog sync seeds it.
    max_wait_ms: Mapped[int | None] = mapped_column(Integer)
    # The most jobs its queue holds before submits are refused (NULL: MLSERVICE_MAX_QUEUED_JOBS_PER_MODEL;
    # 0: no cap).
    max_queued_jobs: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
