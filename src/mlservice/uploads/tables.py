from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base
from mlservice.types import UTCDateTime, utcnow


class UploadedFile(Base):
    """A file uploaded with ``POST /v1/files`` to be given to predictions by its URL.

    Its bytes live in storage under :func:`mlservice.replicate.uploads.upload_key`; only its owner
    can read, use or delete it, and it is gone once ``expires_at`` passes.
    """

    __tablename__ = "uploaded_files"
    __table_args__ = (
        Index("ix_uploaded_files_user_id_created_at", "user_id", "created_at"),
        # The retention sweep's: uploads past their lifetime.
        Index("ix_uploaded_files_expires_at", "expires_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    # As the client declared it: kept to answer with, never used to serve the bytes.
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # `metadata` is taken on declarative classes: the attribute has another name.
    file_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
