from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

_IGNORED = "Accepted for compatibility and ignored: roles and flags are never taken from the client."


class UserCreate(BaseModel):
    """What a person sends to register."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    password: str = Field(description="8 to 128 characters, letters and digits")
    is_active: bool | None = Field(default=None, description=_IGNORED)
    is_superuser: bool | None = Field(default=None, description=_IGNORED)
    is_verified: bool | None = Field(default=None, description=_IGNORED)

    @field_validator("email")
    @classmethod
    def normalise_email(cls, value: EmailStr) -> str:
        return str(value).strip().lower()


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: str
    is_active: bool
    created_at: datetime


class AccessToken(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, no secret)
