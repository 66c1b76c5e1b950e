from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class WalletRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    balance: int = Field(description="Credits owned")
    held: int = Field(description="Credits reserved by unfinished jobs")
    available: int = Field(description="balance - held: what new jobs can spend")


class EntryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    type: str
    amount: int = Field(description="Change of the balance")
    held_delta: int = Field(description="Change of the credits on hold")
    balance_after: int
    held_after: int
    job_id: uuid.UUID | None
    note: str | None
    created_at: datetime


class EntryPage(BaseModel):
    items: list[EntryRead]
    total: int
    limit: int
    offset: int


class RefillRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(gt=0, description="Credits to add (a demo payment)")


class RefillResponse(BaseModel):
    wallet: WalletRead
    entry: EntryRead
