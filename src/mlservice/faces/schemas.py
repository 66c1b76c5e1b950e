from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict


class FaceRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    label: str
    job_id: uuid.UUID | None
    created_at: datetime


class FacePage(BaseModel):
    items: list[FaceRead]
    total: int
    limit: int
    offset: int
