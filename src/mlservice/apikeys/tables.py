from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base
from mlservice.types import UTCDateTime, utcnow


class ApiKey(Base):
    """A user's API key. The secret is shown once at creation; only its SHA-256 is kept.

    ``prefix`` is the start of the key as shown in lists (``mls_`` and the first characters), so a
    user can tell keys apart and recognise one that leaked.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_user_id_created_at", "user_id", "created_at"),
        # The retention sweep's: keys revoked long enough ago (NULL for every key in use).
        Index("ix_api_keys_revoked_at", "revoked_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
