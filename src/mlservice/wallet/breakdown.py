"""The wallet as its owner sees it: the totals, credits by kind, what expires soon, the grants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.wallet import grants
from mlservice.wallet.service import get_wallet
from mlservice.wallet.tables import CreditGrant, GrantKind, GrantPosting, LedgerEntry, Wallet

EXPIRING_WITHIN = timedelta(days=7)


@dataclass(frozen=True)
class Breakdown:
    """The wallet with its credits by kind: ``paid`` + ``bonus`` is what can be spent, ``expiring``
    the part of it that expires within :data:`EXPIRING_WITHIN`, ``grants`` those with credit left."""

    wallet: Wallet
    paid: int
    bonus: int
    expiring: int
    grants: list[CreditGrant]


async def breakdown(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> Breakdown:
    wallet = await get_wallet(session, user_id)
    rows = list(
        await session.scalars(
            select(CreditGrant)
            .where(CreditGrant.user_id == user_id, CreditGrant.remaining > 0)
            .execution_options(populate_existing=True)
        )
    )
    rows.sort(key=grants.spending_key)
    spendable = [g for g in rows if not grants.expired(g, at)]
    return Breakdown(
        wallet=wallet,
        paid=sum(g.free for g in spendable if g.kind == GrantKind.paid),
        bonus=sum(g.free for g in spendable if g.kind == GrantKind.bonus),
        expiring=sum(
            g.free for g in spendable if g.expires_at is not None and g.expires_at <= at + EXPIRING_WITHIN
        ),
        grants=rows,
    )


async def has_due(session: AsyncSession, user_id: uuid.UUID, at: datetime) -> bool:
    """Whether a grant of the user expired with free credit still in it (a sweep is due)."""
    connection = await session.connection()
    return bool(grants.free_expired(await grants.live(connection, user_id), at))


@dataclass(frozen=True, slots=True)
class EntryGrant:
    """What one ledger entry moved of one grant (credits, or held credits for a hold or release)."""

    grant_id: int
    source: str
    kind: str
    credits: int


async def entry_grants(session: AsyncSession, entry_ids: list[int]) -> dict[int, list[EntryGrant]]:
    """The grants each of ``entry_ids`` drew on, returned to or removed from, in posting order."""
    if not entry_ids:
        return {}
    rows = await session.execute(
        select(
            GrantPosting.entry_id,
            GrantPosting.grant_id,
            CreditGrant.source,
            CreditGrant.kind,
            GrantPosting.amount,
            GrantPosting.held_delta,
        )
        .join(CreditGrant, CreditGrant.id == GrantPosting.grant_id)
        .where(GrantPosting.entry_id.in_(entry_ids))
        .order_by(GrantPosting.id)
    )
    found: dict[int, list[EntryGrant]] = {}
    for entry_id, grant_id, source, kind, amount, held_delta in rows:
        if entry_id is not None:
            found.setdefault(entry_id, []).append(
                EntryGrant(grant_id, source, kind, abs(amount or held_delta))
            )
    return found


@dataclass(frozen=True, slots=True)
class DayBalance:
    day: date
    paid: int
    bonus: int


async def balance_history(
    session: AsyncSession, user_id: uuid.UUID, *, days: int = 30, today: date | None = None
) -> list[DayBalance]:
    """The balance at the end of each of the last ``days`` days (UTC), paid and bonus apart: the
    sums of the user's grant postings up to then (a grant's opening posting counts from the
    grant's creation)."""
    last = today or grants.now().date()
    first = last - timedelta(days=days - 1)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    at = func.coalesce(LedgerEntry.created_at, CreditGrant.created_at)
    moved = (
        select(CreditGrant.kind, at, GrantPosting.amount)
        .select_from(GrantPosting)
        .join(CreditGrant, CreditGrant.id == GrantPosting.grant_id)
        .outerjoin(LedgerEntry, LedgerEntry.id == GrantPosting.entry_id)
        .where(CreditGrant.user_id == user_id, GrantPosting.amount != 0)
    )
    totals = {GrantKind.paid.value: 0, GrantKind.bonus.value: 0}
    by_day: dict[date, dict[str, int]] = {}
    for kind, when, amount in await session.execute(moved):
        if when is None:
            continue
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        if when < start:
            totals[kind] = totals.get(kind, 0) + amount
        else:
            moves = by_day.setdefault(when.date(), {})
            moves[kind] = moves.get(kind, 0) + amount
    history = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        for kind, amount in by_day.get(day, {}).items():
            totals[kind] = totals.get(kind, 0) + amount
        history.append(DayBalance(day, totals[GrantKind.paid.value], totals[GrantKind.bonus.value]))
    return history
