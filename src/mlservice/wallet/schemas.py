from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mlservice.webhooks.schemas import WebhookDeliveryRead


class WalletRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    balance: int = Field(description="Credits owned")
    held: int = Field(description="Credits reserved by unfinished jobs")
    available: int = Field(description="balance - held: what new jobs can spend")


class GrantRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(description="paid (a top-up) or bonus (signup bonus, administrator, promotion)")
    source: str = Field(description="topup, signup_bonus, admin, promo or migrated")
    priority: int = Field(description="Spent in this order: lower first, then the earliest expiry")
    expires_at: datetime | None
    amount: int = Field(description="Credits granted")
    remaining: int = Field(description="Credits left, held ones included")
    held: int = Field(description="Credits of it reserved by unfinished jobs")
    created_at: datetime
    note: str | None = Field(default=None, description="Why it was granted")
    created_by: str | None = Field(default=None, description="The administrator who granted it")
    closed_at: datetime | None = Field(default=None, description="When it expired or was voided")
    voided_by: str | None = Field(default=None, description="The administrator who voided it")


class WalletDetail(WalletRead):
    paid: int = Field(description="Available paid credits")
    bonus: int = Field(description="Available bonus credits (paid + bonus = available)")
    expiring: int = Field(description="Available credits that expire within the next 7 days")
    grants: list[GrantRead] = Field(description="Grants with credit left, in the order they are spent")


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


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=1, max_length=64, description="A promotion code")


class RedeemResponse(BaseModel):
    wallet: WalletRead
    grant: GrantRead


class AlertRequest(BaseModel):
    """How to be told that credits run low (``PUT /api/wallet/alerts``)."""

    model_config = ConfigDict(extra="forbid")

    thresholds: list[Annotated[int, Field(ge=1, le=10**12)]] | None = Field(
        default=None,
        max_length=5,
        description="Alert when the available credits drop below each of these; null: the defaults "
        "(the cheapest model's price and 10 % of the last top-up); []: no alerts",
    )
    webhook_url: str | None = Field(
        default=None, description="Where `balance.low` events are POSTed, signed like job webhooks"
    )
    telegram: bool = Field(default=True, description="Also message the Telegram chats linked to the account")


class BalanceAlertRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    threshold: int = Field(description="The lowest threshold this alert crossed")
    available: int = Field(description="Credits available when it was sent")
    created_at: datetime


class AlertSettingsRead(BaseModel):
    thresholds: list[int] | None = Field(description="The user's own thresholds; null: the defaults")
    effective: list[int] = Field(description="The thresholds in force now, highest first")
    below: list[int] = Field(description="Thresholds the available credits are below, already announced")
    webhook_url: str | None
    telegram: bool
    recent: list[BalanceAlertRead] = Field(description="The latest alerts, newest first")
    deliveries: list[WebhookDeliveryRead] = Field(
        description="The latest `balance.low` deliveries to the account webhook, newest first"
    )
