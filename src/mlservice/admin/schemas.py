from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from mlservice.wallet.schemas import EntryRead, GrantRead, WalletRead
from mlservice.wallet.tables import DEFAULT_PRIORITY

# Far beyond any real correction, and far inside the BIGINT a balance is stored in: an amount past
# that would fail in the database (a 500) instead of being refused.
MAX_ADJUSTMENT = 10**12


class AdjustmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(
        ge=-MAX_ADJUSTMENT,
        le=MAX_ADJUSTMENT,
        description="Credits to add (positive) or take away (negative)",
    )
    note: str = Field(min_length=1, max_length=500, description="Why: kept in the ledger")

    @field_validator("amount")
    @classmethod
    def not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must not be 0")
        return value


class GrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: int = Field(ge=1, le=MAX_ADJUSTMENT, description="Bonus credits to grant")
    note: str = Field(min_length=1, max_length=300, description="Why: kept with the grant and in the ledger")
    user_id: uuid.UUID | None = Field(default=None, description="The account; none: every active account")
    expires_at: AwareDatetime | None = Field(default=None, description="When what is left of it expires")
    priority: int = Field(
        default=DEFAULT_PRIORITY, ge=0, le=100, description="Spent in this order: lower first"
    )


class GrantsMade(BaseModel):
    count: int = Field(description="Grants made: one, or one per active account")
    grants: list[GrantRead] = Field(
        description="The grants made; to everyone, only the first 100 (in user order)"
    )


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=300, description="Why: kept in the ledger")


class RefundResponse(BaseModel):
    wallet: WalletRead = Field(description="The job owner's wallet after the refund")
    entry: EntryRead = Field(description="The refund's ledger entry")


class PromoCodeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        min_length=3, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Letters, digits, - _"
    )
    amount: int = Field(ge=1, le=MAX_ADJUSTMENT, description="Bonus credits each redemption grants")
    max_uses: int = Field(ge=1, le=MAX_ADJUSTMENT, description="Redemptions in all (one per user)")
    redeem_until: AwareDatetime | None = Field(default=None, description="The code's own expiry")
    grant_days: int | None = Field(default=None, ge=1, le=3650, description="Each grant expires after this")
    priority: int = Field(default=DEFAULT_PRIORITY, ge=0, le=100)


class PromoCodeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    amount: int
    max_uses: int
    uses: int
    redeem_until: datetime | None
    grant_days: int | None
    priority: int
    created_by: str | None
    created_at: datetime


class AdjustmentResponse(BaseModel):
    wallet: WalletRead
    entry: EntryRead


class AccountRead(BaseModel):
    """An account as administrators see it, with its wallet."""

    id: uuid.UUID
    email: str
    role: str
    is_superuser: bool
    is_active: bool
    is_verified: bool
    created_at: datetime
    balance: int = Field(description="Credits owned")
    held: int = Field(description="Credits reserved by unfinished jobs")
    available: int = Field(description="balance - held")


class AccountPage(BaseModel):
    items: list[AccountRead]
    total: int
    limit: int
    offset: int


class AccountUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    is_superuser: bool | None = Field(default=None, description="The admin role")
    is_active: bool | None = Field(default=None, description="False: the account can no longer sign in")

    @model_validator(mode="after")
    def something_to_change(self) -> AccountUpdate:
        if self.is_superuser is None and self.is_active is None:
            raise ValueError("give `is_superuser`, `is_active` or both")
        return self
