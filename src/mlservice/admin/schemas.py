from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlservice.wallet.schemas import EntryRead, WalletRead


class AdjustmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(description="Credits to add (positive) or take away (negative)")
    note: str = Field(min_length=1, max_length=500, description="Why: kept in the ledger")

    @field_validator("amount")
    @classmethod
    def not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class AdjustmentResponse(BaseModel):
    wallet: WalletRead
    entry: EntryRead
