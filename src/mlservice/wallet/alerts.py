"""Low-balance alerts: a ``balance.low`` event to the account's webhook and a Telegram message to
each linked chat when the available credits cross below a threshold, once per crossing.

A user's thresholds are their own (``alert_settings.thresholds``) or, by default, two: the price of
the cheapest enabled model (below it nothing can run) and 10 % of the last top-up (rounded up).
``alert_settings.alerted`` holds the thresholds the available credits are below now that were
already announced; a threshold is announced again only after credits came in (a top-up, a grant,
a refund...) and lifted the available credits back to it or above.

When it is looked at:

- Money out (a capture, an expiry, a void, an administrator taking credits): the wallet is
  checked before the unit of work commits, if its available credits dropped below
  ``wallets.low_balance_below`` (the highest threshold not yet crossed, kept on the wallet row so
  that the worker's batch settle compares it in the same statement, at no extra round trip). A
  hold alone (a submit) is not looked at: the crossing is announced when the job is charged.
- Money in: the wallet is reviewed too, re-arming the thresholds it is above again; nothing is sent.
- New settings: thresholds already crossed count as announced (no crossing happened).

An alert, its webhook delivery and its chat messages commit with the money move that caused it, or
not at all (outbox). Administrators' price changes clear every wallet's ``low_balance_below``
("not known"), so the next charge of each wallet looks at the new cheapest price.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.catalog.tables import CatalogModel
from mlservice.chats.tables import ChatMessage, TelegramLink
from mlservice.db import before_commit
from mlservice.types import utcnow
from mlservice.wallet.tables import (
    AlertSettings,
    BalanceAlert,
    CreditGrant,
    GrantSource,
    Wallet,
)
from mlservice.webhooks.tables import WebhookDelivery

EVENT = "balance.low"
# The default threshold after a top-up: this share of it, in percent.
TOP_UP_SHARE_PERCENT = 10
MAX_THRESHOLDS = 5


class Review(enum.Enum):
    """Why a wallet is looked at: what may be announced and what is re-armed."""

    # Money went out: thresholds newly crossed are announced.
    debit = "debit"
    # Money came in: thresholds now above are re-armed; nothing is announced.
    credit = "credit"
    # The user changed the settings: thresholds already crossed count as announced.
    settings = "settings"


@dataclass(frozen=True)
class Sent:
    """An alert that a review sent."""

    user_id: uuid.UUID
    threshold: int
    available: int
    crossed: list[int]


_wallets, _settings, _alerts, _chats, _messages, _deliveries, _grants, _models = (
    cast(Table, t.__table__)
    for t in (
        Wallet,
        AlertSettings,
        BalanceAlert,
        TelegramLink,
        ChatMessage,
        WebhookDelivery,
        CreditGrant,
        CatalogModel,
    )
)
_PENDING = "balance_alerts"

# Wallets whose available credits are below their next threshold (or not known yet).
_DUE = select(_wallets.c.user_id).where(
    _wallets.c.user_id.in_(bindparam("ids", expanding=True)),
    or_(
        _wallets.c.low_balance_below.is_(None),
        _wallets.c.balance - _wallets.c.held < _wallets.c.low_balance_below,
    ),
)
_WALLET = select(_wallets.c.balance, _wallets.c.held).where(_wallets.c.user_id == bindparam("b_user"))
_SETTINGS = select(_settings).where(_settings.c.user_id == bindparam("b_user"))
_CHEAPEST = select(func.min(_models.c.price)).where(_models.c.enabled.is_(True), _models.c.price > 0)
_LAST_TOP_UP = (
    select(_grants.c.amount)
    .where(_grants.c.user_id == bindparam("b_user"), _grants.c.source == GrantSource.topup)
    .order_by(_grants.c.id.desc())
    .limit(1)
)
_SET_TRIGGER = (
    update(_wallets)
    .where(_wallets.c.user_id == bindparam("b_user"))
    .values(low_balance_below=bindparam("below"))
)
_CHATS = select(_chats.c.chat_id).where(_chats.c.user_id == bindparam("b_user")).order_by(_chats.c.chat_id)


def watch(session: AsyncSession, user_ids: Iterable[uuid.UUID], review: Review) -> None:
    """Look at these wallets' alerts right before ``session``'s unit of work commits (they moved
    in it, so they are locked by it). Money out is looked at only where the available credits
    dropped below the wallet's next threshold."""
    pending: dict[uuid.UUID, Review] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = {}
        before_commit(session, _PENDING, partial(_review_pending, session))
    for user_id in user_ids:
        # Money out and in in one unit of work: what went out decides.
        if pending.get(user_id) is not Review.debit:
            pending[user_id] = review


async def _review_pending(session: AsyncSession) -> None:
    pending: dict[uuid.UUID, Review] = session.info.pop(_PENDING, {})
    debited = [user_id for user_id, why in pending.items() if why is Review.debit]
    if debited:
        due = set((await session.execute(_DUE, {"ids": debited})).scalars())
        debited = [user_id for user_id in debited if user_id in due]
    credited = [user_id for user_id, why in pending.items() if why is Review.credit]
    await review(session, debited, Review.debit)
    await review(session, credited, Review.credit)


async def thresholds(session: AsyncSession, user_id: uuid.UUID, custom: Sequence[int] | None) -> list[int]:
    """The user's thresholds, highest first: their own, or the defaults (see the module)."""
    if custom is not None:
        return sorted({int(t) for t in custom if int(t) > 0}, reverse=True)
    found: set[int] = set()
    cheapest = await session.scalar(_CHEAPEST)
    if cheapest:
        found.add(int(cheapest))
    last_top_up = await session.scalar(_LAST_TOP_UP, {"b_user": user_id})
    if last_top_up:
        found.add(-(-int(last_top_up) * TOP_UP_SHARE_PERCENT // 100))
    return sorted(found, reverse=True)


async def review(session: AsyncSession, user_ids: Iterable[uuid.UUID], why: Review) -> list[Sent]:
    """Look at each wallet's alerts (each locked by the caller's unit of work), send what a
    crossing calls for, and keep the wallet's next threshold."""
    sent: list[Sent] = []
    for user_id in sorted(set(user_ids)):
        found = await _review_one(session, user_id, why)
        if found is not None:
            sent.append(found)
    return sent


async def _review_one(session: AsyncSession, user_id: uuid.UUID, why: Review) -> Sent | None:
    wallet = (await session.execute(_WALLET, {"b_user": user_id})).one_or_none()
    if wallet is None:
        return None
    available = wallet.balance - wallet.held
    settings = (await session.execute(_SETTINGS, {"b_user": user_id})).one_or_none()
    levels = await thresholds(session, user_id, settings.thresholds if settings else None)
    before = set(settings.alerted) if settings else set()
    below = [t for t in levels if available < t]
    # Money in re-arms only: what is below and was not announced yet waits for the next charge.
    alerted = [t for t in below if t in before] if why is Review.credit else below
    new = [t for t in below if t not in before] if why is Review.debit else []
    # The next charge needs a look once below the highest threshold not announced.
    armed = [t for t in levels if t not in alerted]
    await session.execute(_SET_TRIGGER, {"b_user": user_id, "below": max(armed, default=0)})
    if settings is not None or alerted:
        await _save_alerted(session, user_id, settings, alerted)
    if not new:
        return None
    made = Sent(user_id, min(new), available, below)
    await _announce(session, made, wallet.balance, wallet.held, settings)
    return made


async def _save_alerted(session: AsyncSession, user_id: uuid.UUID, settings: Any, alerted: list[int]) -> None:
    if settings is None:
        await session.execute(
            insert(_settings).values(
                user_id=user_id,
                thresholds=None,
                webhook_url=None,
                telegram=True,
                alerted=alerted,
                updated_at=utcnow(),
            )
        )
    elif list(settings.alerted) != alerted:
        await session.execute(update(_settings).where(_settings.c.user_id == user_id).values(alerted=alerted))


async def _announce(session: AsyncSession, sent: Sent, balance: int, held: int, settings: Any) -> None:
    now = utcnow()
    await session.execute(
        insert(_alerts).values(
            user_id=sent.user_id, threshold=sent.threshold, available=sent.available, created_at=now
        )
    )
    if settings is not None and settings.webhook_url:
        await session.execute(
            insert(_deliveries).values(
                job_id=None,
                user_id=sent.user_id,
                event=EVENT,
                url=settings.webhook_url,
                payload=payload(sent, balance, held, now),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )
    if settings is None or settings.telegram:
        chats = list((await session.execute(_CHATS, {"b_user": sent.user_id})).scalars())
        if chats:
            text = chat_text(sent)
            await session.execute(
                insert(_messages),
                [
                    {
                        "chat_id": chat_id,
                        "user_id": sent.user_id,
                        "text": text,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                    for chat_id in chats
                ],
            )


def payload(sent: Sent, balance: int, held: int, at: datetime) -> dict[str, Any]:
    """The body of a ``balance.low`` webhook."""
    body = {
        "type": EVENT,
        "created_at": at.isoformat(),
        "data": {
            "user_id": str(sent.user_id),
            "available": sent.available,
            "balance": balance,
            "held": held,
            "threshold": sent.threshold,
            "thresholds_crossed": sent.crossed,
        },
    }
    # Through JSON once, as the job outbox stores its bodies: exactly what will be sent.
    stored: dict[str, Any] = json.loads(json.dumps(body))
    return stored


def chat_text(sent: Sent) -> str:
    return (
        f"Your mlservice credits are running low: {sent.available} available, below {sent.threshold}.\n"
        "Add credits with /topup AMOUNT or on the wallet page."
    )


async def forget_triggers(session: AsyncSession) -> None:
    """Prices changed: every wallet's next threshold is not known any more (see the module)."""
    await session.execute(
        update(_wallets).where(_wallets.c.low_balance_below.is_not(None)).values(low_balance_below=None)
    )


@dataclass(frozen=True)
class AlertView:
    thresholds: list[int] | None
    effective: list[int]
    below: list[int]
    webhook_url: str | None
    telegram: bool
    recent: list[Any]
    # The latest deliveries of account events (balance.low) to the account webhook.
    deliveries: list[Any]


async def view(session: AsyncSession, user_id: uuid.UUID, recent: int = 10) -> AlertView:
    """The user's alert settings, the thresholds in force and the latest alerts."""
    settings = (await session.execute(_SETTINGS, {"b_user": user_id})).one_or_none()
    custom = list(settings.thresholds) if settings and settings.thresholds is not None else None
    latest = await session.scalars(
        select(BalanceAlert)
        .where(BalanceAlert.user_id == user_id)
        .order_by(BalanceAlert.id.desc())
        .limit(recent)
    )
    sent = await session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id.is_(None), WebhookDelivery.user_id == user_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(recent)
    )
    return AlertView(
        thresholds=custom,
        effective=await thresholds(session, user_id, custom),
        below=sorted(settings.alerted, reverse=True) if settings else [],
        webhook_url=settings.webhook_url if settings else None,
        telegram=settings.telegram if settings else True,
        recent=list(latest),
        deliveries=list(sent),
    )


async def configure(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    custom: Sequence[int] | None,
    webhook_url: str | None,
    telegram: bool,
) -> None:
    """Save the user's settings (the wallet locked by the caller); thresholds already crossed
    count as announced."""
    values = {
        "thresholds": sorted(set(custom), reverse=True) if custom is not None else None,
        "webhook_url": webhook_url,
        "telegram": telegram,
        "updated_at": utcnow(),
    }
    changed = await session.execute(update(_settings).where(_settings.c.user_id == user_id).values(**values))
    if not changed.rowcount:  # type: ignore[attr-defined]
        await session.execute(insert(_settings).values(user_id=user_id, alerted=[], **values))
    await review(session, [user_id], Review.settings)
