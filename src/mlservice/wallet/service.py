"""The wallet: every change is a ledger entry written together with the wallet's running totals.

Callers lock the wallet (:func:`lock_wallet`) before changing it, in the unit of work that also
writes what the change is for (the job, the top-up), so money and the reason for it commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from sqlalchemy import BigInteger, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import NotFound
from mlservice.types import utcnow
from mlservice.wallet.errors import AdjustmentExceedsAvailable, InsufficientCredits
from mlservice.wallet.tables import EntryType, Hold, HoldStatus, LedgerEntry, Wallet


async def create_wallet(session: AsyncSession, user_id: uuid.UUID, signup_bonus: int) -> Wallet:
    wallet = Wallet(user_id=user_id, balance=0, held=0)
    session.add(wallet)
    await session.flush()
    if signup_bonus > 0:
        _post(session, wallet, EntryType.signup_bonus, amount=signup_bonus, note="Welcome bonus")
    await session.flush()
    return wallet


async def get_wallet(session: AsyncSession, user_id: uuid.UUID) -> Wallet:
    wallet = await session.get(Wallet, user_id, populate_existing=True)
    if wallet is None:
        raise NotFound("Wallet not found.", code="wallet_not_found")
    return wallet


async def lock_wallet(session: AsyncSession, user_id: uuid.UUID) -> Wallet:
    """Load the wallet for a change: row-locked on PostgreSQL (SQLite has one writer already)."""
    stmt = (
        select(Wallet)
        .where(Wallet.user_id == user_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    wallet = (await session.execute(stmt)).scalar_one_or_none()
    if wallet is None:
        raise NotFound("Wallet not found.", code="wallet_not_found")
    return wallet


async def lock_wallets(session: AsyncSession, user_ids: Iterable[uuid.UUID]) -> None:
    """Lock several wallets for a change, in user order: two transactions that each lock several
    this way never wait on each other in a cycle. (SQLite has one writer already.)"""
    if session.get_bind().dialect.name != "sqlite":
        await session.execute(_LOCK_WALLETS, {"user_ids": sorted(set(user_ids))})


def _post(
    session: AsyncSession,
    wallet: Wallet,
    type_: EntryType,
    *,
    amount: int = 0,
    held_delta: int = 0,
    job_id: uuid.UUID | None = None,
    note: str | None = None,
) -> LedgerEntry:
    balance, held = wallet.balance + amount, wallet.held + held_delta
    # The database checks these too; checking first gives a clear error instead of an integrity one.
    if balance < 0 or held < 0 or held > balance:
        raise InsufficientCredits(
            "Not enough available credits for this operation.", available=wallet.available
        )
    wallet.balance, wallet.held = balance, held
    entry = LedgerEntry(
        user_id=wallet.user_id,
        type=type_,
        amount=amount,
        held_delta=held_delta,
        balance_after=wallet.balance,
        held_after=wallet.held,
        job_id=job_id,
        note=note,
    )
    session.add(entry)
    return entry


async def top_up(session: AsyncSession, user_id: uuid.UUID, amount: int) -> LedgerEntry:
    wallet = await lock_wallet(session, user_id)
    entry = _post(session, wallet, EntryType.topup, amount=amount, note="Demo payment")
    await session.flush()
    return entry


async def adjust(session: AsyncSession, user_id: uuid.UUID, amount: int, note: str) -> LedgerEntry:
    """An administrator's correction, positive or negative; never below the open holds."""
    wallet = await lock_wallet(session, user_id)
    if wallet.available + amount < 0:
        raise AdjustmentExceedsAvailable(
            f"Taking {-amount} credits would leave {wallet.available + amount} available; "
            f"at most {wallet.available} can be taken now.",
            available=wallet.available,
        )
    entry = _post(session, wallet, EntryType.adjustment, amount=amount, note=note)
    await session.flush()
    return entry


async def place_hold(session: AsyncSession, wallet: Wallet, job_id: uuid.UUID, amount: int) -> Hold:
    """Reserve ``amount`` for a job; the caller holds the wallet lock."""
    if amount > wallet.available:
        raise InsufficientCredits(
            f"This run costs {amount} credits; {wallet.available} available. Top up your wallet.",
            price=amount,
            available=wallet.available,
        )
    hold = Hold(user_id=wallet.user_id, job_id=job_id, amount=amount, status=HoldStatus.open)
    session.add(hold)
    _post(session, wallet, EntryType.hold, held_delta=amount, job_id=job_id)
    await session.flush()
    return hold


@dataclass(frozen=True)
class Resolved:
    """A hold that this call resolved, and the ledger entry that recorded it."""

    hold_id: int
    user_id: uuid.UUID
    amount: int
    balance_after: int
    held_after: int


_holds, _wallets, _ledger = (cast(Table, t.__table__) for t in (Hold, Wallet, LedgerEntry))
# Built once: settling a job runs these for every job, and building the statement is a good part
# of what they cost in Python.
_RESOLVE_HOLD = (
    update(_holds)
    .where(_holds.c.job_id == bindparam("b_job_id"), _holds.c.status == HoldStatus.open)
    .values(status=bindparam("to"), resolved_at=bindparam("now"))
    .returning(_holds.c.id, _holds.c.user_id, _holds.c.amount)
)
_MOVE = (
    update(_wallets)
    .where(_wallets.c.user_id == bindparam("b_user_id"))
    .values(
        balance=_wallets.c.balance + bindparam("amount", type_=BigInteger),
        held=_wallets.c.held + bindparam("held_delta", type_=BigInteger),
        updated_at=bindparam("now"),
    )
    .returning(_wallets.c.balance, _wallets.c.held)
)
_ENTRY = insert(_ledger)
_LOCK_WALLETS = (
    select(_wallets.c.user_id)
    .where(_wallets.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(_wallets.c.user_id)
    .with_for_update()
)


async def _resolve(session: AsyncSession, job_id: uuid.UUID, to: HoldStatus) -> Resolved | None:
    """Move the job's open hold to ``to``; returns None when it was already resolved.

    The guarded UPDATE is what makes a hold resolve exactly once, whoever tries concurrently: it
    locks the hold, then the wallet's running totals move in the same statement that locks the
    wallet, and the ledger entry records the totals it produced (the database's checks refuse any
    that would go negative). Three statements, whatever the wallet held before.
    """
    now = utcnow()
    hold = (await session.execute(_RESOLVE_HOLD, {"b_job_id": job_id, "to": to, "now": now})).one_or_none()
    if hold is None:
        return None
    hold_id, user_id, amount = hold
    amount_delta = -amount if to is HoldStatus.captured else 0
    balance, held = (
        await session.execute(
            _MOVE, {"b_user_id": user_id, "amount": amount_delta, "held_delta": -amount, "now": now}
        )
    ).one()
    await session.execute(
        _ENTRY,
        {
            "user_id": user_id,
            "type": EntryType.capture if to is HoldStatus.captured else EntryType.release,
            "amount": amount_delta,
            "held_delta": -amount,
            "balance_after": balance,
            "held_after": held,
            "job_id": job_id,
            "note": None,
            "created_at": now,
        },
    )
    return Resolved(hold_id, user_id, amount, balance, held)


async def capture_hold(session: AsyncSession, job_id: uuid.UUID) -> Resolved | None:
    return await _resolve(session, job_id, HoldStatus.captured)


async def release_hold(session: AsyncSession, job_id: uuid.UUID) -> Resolved | None:
    return await _resolve(session, job_id, HoldStatus.released)


@dataclass
class EntryPage:
    items: list[LedgerEntry]
    total: int


async def list_entries(session: AsyncSession, user_id: uuid.UUID, limit: int, offset: int) -> EntryPage:
    total = await session.scalar(
        select(func.count()).select_from(LedgerEntry).where(LedgerEntry.user_id == user_id)
    )
    rows = await session.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.user_id == user_id)
        .order_by(LedgerEntry.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return EntryPage(items=list(rows), total=total or 0)
