from __future__ import annotations

import uuid
from datetime import datetime

from fastapi_users_db_sqlalchemy import SQLAlchemyBaseUserTableUUID
from sqlalchemy import Uuid
from sqlalchemy.orm import Mapped, mapped_column

from mlservice.orm import Base
from mlservice.types import UTCDateTime, utcnow


class User(SQLAlchemyBaseUserTableUUID, Base):
    """An account. ``is_superuser`` is the admin role; ``role`` names it for the API."""

    __tablename__ = "users"

    # The library's GUID stores text with dashes on SQLite; Uuid matches every foreign key here.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    @property
    def role(self) -> str:
        return "admin" if self.is_superuser else "user"
