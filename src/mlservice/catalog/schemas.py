from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slug: str
    title: str
    task: str
    description: str
    input_kind: str
    price: int = Field(description="Credits per run")
    enabled: bool
    params_schema: dict[str, Any] = Field(default_factory=dict, description="JSON Schema of `params`")
    updated_at: datetime


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: int | None = Field(default=None, ge=0, le=1_000_000)
    enabled: bool | None = None

    @model_validator(mode="after")
    def something_to_change(self) -> ModelUpdate:
        if self.price is None and self.enabled is None:
            raise ValueError("give `price`, `enabled` or both")
        return self
