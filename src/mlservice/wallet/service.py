"""The wallet: every change is a ledger entry written together with the wallet's running totals.

Callers lock the wallet (:func:`lock_wallet`) before changing it, in the unit of work that also
writes what the change is for (the job, the top-up), so money and the reason for it commit together.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Table, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import NotFound
from mlservice.types import utcnow
from mlservice.wallet import alerts, grants
from mlservice.wallet.errors import AdjustmentExceedsAvailable, InsufficientCredits
from mlservice.wallet.tables import (
    CreditGrant,
    EntryType,
    GrantKind,
    GrantSource,
    Hold,
    HoldStatus,
    LedgerEntry,
    Wallet,
)


async def create_wallet(session: AsyncSession, user_id: uuid.UUID, signup_bonus: int) -> Wallet:
    wallet = Wallet(user_id=user_id, balance=0, held=0)
    session.add(wallet)
    await session.flush()
    if signup_bonus > 0:
        await credit(
            session,
            wallet,
            EntryType.signup_bonus,
            signup_bonus,
            kind=GrantKind.bonus,
            source=GrantSource.signup_bonus,
            note="Welcome bonus",
        )
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


def post_entry(
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


async def credit(
    session: AsyncSession,
    wallet: Wallet,
    type_: EntryType,
    amount: int,
    *,
    kind: GrantKind,
    source: str,
    note: str | None,
    expires_at: datetime | None = None,
    priority: int | None = None,
    created_by: str | None = None,
) -> tuple[LedgerEntry, CreditGrant]:
    """Credits in: a ledger entry and the new grant that holds them (the caller holds the lock)."""
    entry = post_entry(session, wallet, type_, amount=amount, note=note)
    alerts.watch(session, [wallet.user_id], alerts.Review.credit)
    await session.flush()
    grant = await grants.open_grant(
        session,
        wallet.user_id,
        entry.id,
        kind=kind,
        source=source,
        amount=amount,
        expires_at=expires_at,
        priority=priority,
        note=note,
        created_by=created_by,
    )
    await session.flush()
    return entry, grant


async def top_up(session: AsyncSession, user_id: uuid.UUID, amount: int) -> LedgerEntry:
    wallet = await lock_wallet(session, user_id)
    entry, _ = await credit(
        session,
        wallet,
        EntryType.topup,
        amount,
        kind=GrantKind.paid,
        source=GrantSource.topup,
        note="Demo payment",
    )
    return entry


async def adjust(
    session: AsyncSession, user_id: uuid.UUID, amount: int, note: str, *, by: str | None = None
) -> LedgerEntry:
    """An administrator's correction, positive or negative; never below the open holds.

    Credits added are a bonus grant of their own; credits taken come off the free credit of the
    grants in spending order, as a spend would take them.
    """
    wallet = await lock_wallet(session, user_id)
    at = grants.now()
    await expire(session, wallet, at)
    if wallet.available + amount < 0:
        raise AdjustmentExceedsAvailable(
            f"Taking {-amount} credits would leave {wallet.available + amount} available; "
            f"at most {wallet.available} can be taken now.",
            available=wallet.available,
        )
    if amount > 0:
        entry, _ = await credit(
            session,
            wallet,
            EntryType.adjustment,
            amount,
            kind=GrantKind.bonus,
            source=GrantSource.admin,
            note=note,
            created_by=by,
        )
        return entry
    connection = await session.connection()
    draws = grants.plan(await grants.live(connection, user_id), -amount, at)
    entry = post_entry(session, wallet, EntryType.adjustment, amount=amount, note=note)
    alerts.watch(session, [user_id], alerts.Review.debit)
    await session.flush()
    await grants.post(connection, entry.id, [grants.Move(g, -n, 0) for g, n in draws], None)
    return entry


async def expire(session: AsyncSession, wallet: Wallet, at: datetime) -> int:
    """Remove the free credit of the wallet's grants that expired by ``at``, one ``expiry`` entry
    per grant; held credit stays (see :mod:`mlservice.wallet.grants`). The caller holds the wallet
    lock. How many credits were removed."""
    connection = await session.connection()
    due = grants.free_expired(await grants.live(connection, wallet.user_id), at)
    return await _expire(session, wallet, due)


async def _expire(session: AsyncSession, wallet: Wallet, due: Sequence[tuple[int, int]]) -> int:
    if not due:
        return 0
    alerts.watch(session, [wallet.user_id], alerts.Review.debit)
    connection = await session.connection()
    for grant_id, free in due:
        entry = post_entry(session, wallet, EntryType.expiry, amount=-free, note=f"Grant {grant_id} expired")
        await session.flush()
        await grants.post(connection, entry.id, [grants.Move(grant_id, -free, 0)], None)
    return sum(free for _, free in due)


async def expire_due(session: AsyncSession, at: datetime, limit: int = 500) -> int:
    """The sweep's: expire what is due in every wallet (up to ``limit`` grants), wallets locked in
    user order. How many credits were removed."""
    users = await grants.due_users(session, at, limit)
    await lock_wallets(session, users)
    removed = 0
    for user_id in users:
        removed += await expire(session, await lock_wallet(session, user_id), at)
    return removed


async def place_hold(session: AsyncSession, wallet: Wallet, job_id: uuid.UUID, amount: int) -> Hold:
    """Reserve ``amount`` for a job, drawn on the grants in spending order; the caller holds the
    wallet lock. (A submit writes the same rows in :mod:`mlservice.jobs.admission`.)"""
    at = grants.now()
    await expire(session, wallet, at)
    connection = await session.connection()
    draws = grants.plan(await grants.live(connection, wallet.user_id), amount, at)
    if amount > wallet.available or sum(n for _, n in draws) < amount:
        raise InsufficientCredits(
            f"This run costs {amount} credits; {wallet.available} available. Top up your wallet.",
            price=amount,
            available=wallet.available,
        )
    hold = Hold(user_id=wallet.user_id, job_id=job_id, amount=amount, status=HoldStatus.open)
    session.add(hold)
    entry = post_entry(session, wallet, EntryType.hold, held_delta=amount, job_id=job_id)
    await session.flush()
    await grants.post(connection, entry.id, [grants.Move(g, 0, n) for g, n in draws], job_id)
    return hold


@dataclass(frozen=True)
class Resolved:
    """A hold that this call resolved, and the ledger entry that recorded it."""

    hold_id: int
    user_id: uuid.UUID
    amount: int
    balance_after: int
    held_after: int


_holds, _wallets, _ledger, _grants = (
    cast(Table, t.__table__) for t in (Hold, Wallet, LedgerEntry, CreditGrant)
)
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
    that would go negative). Then the hold's draws move back out of their grants' held credit:
    charged (a capture) or returned (a release), each a posting of the entry. A release that returns
    credit to a grant that has expired meanwhile removes it at once (see :mod:`.grants`).
    """
    now = utcnow()
    hold = (await session.execute(_RESOLVE_HOLD, {"b_job_id": job_id, "to": to, "now": now})).one_or_none()
    if hold is None:
        return None
    hold_id, user_id, amount = hold
    captured = to is HoldStatus.captured
    amount_delta = -amount if captured else 0
    balance, held = (
        await session.execute(
            _MOVE, {"b_user_id": user_id, "amount": amount_delta, "held_delta": -amount, "now": now}
        )
    ).one()
    if captured:
        alerts.watch(session, [user_id], alerts.Review.debit)
    entry_type = EntryType.capture if captured else EntryType.release
    connection = await session.connection()
    if connection.dialect.name == "postgresql":
        # The entry, its postings and the grants' totals in one statement (see grants.settle_pg).
        entry = _entry_row(user_id, entry_type, amount_delta, -amount, balance, held, job_id, now)
        moved = await grants.settle_pg(connection, entry, captured)
    else:
        entry_id = await _entry(
            session, user_id, entry_type, amount_delta, -amount, balance, held, job_id, now
        )
        drawn = [(g, h) for g, _, h in await grants.held_by_job(connection, job_id) if h > 0]
        moves = [grants.Move(g, -h if captured else 0, -h) for g, h in drawn]
        await grants.post(connection, entry_id, moves, job_id)
        moved = (await session.execute(_GRANTS_OF, {"ids": [g for g, _ in drawn]})).all() if drawn else []
    if not captured:
        await _expire_returned(session, user_id, moved)
    return Resolved(hold_id, user_id, amount, balance, held)


_ENTRY_ID = insert(_ledger).returning(_ledger.c.id)
_GRANTS_OF = select(
    _grants.c.id, _grants.c.expires_at, _grants.c.remaining, _grants.c.held, _grants.c.user_id
).where(_grants.c.id.in_(bindparam("ids", expanding=True)))


def _entry_row(
    user_id: uuid.UUID,
    type_: EntryType,
    amount: int,
    held_delta: int,
    balance: int,
    held: int,
    job_id: uuid.UUID | None,
    now: datetime,
    note: str | None = None,
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "type": type_,
        "amount": amount,
        "held_delta": held_delta,
        "balance_after": balance,
        "held_after": held,
        "job_id": job_id,
        "note": note,
        "created_at": now,
    }


async def _entry(session: AsyncSession, *row: Any) -> int:
    return int((await session.execute(_ENTRY_ID, _entry_row(*row))).scalar_one())


async def _expire_returned(session: AsyncSession, user_id: uuid.UUID, moved: Sequence[Any]) -> None:
    """Expire at once what a release or refund gave back to grants that have expired (``moved``:
    those grants as they are now; the wallet is locked: the caller moved it)."""
    due = grants.free_expired(moved, grants.now())
    if due:
        await _expire(session, await lock_wallet(session, user_id), due)


_REFUND_HOLD = (
    update(_holds)
    .where(_holds.c.job_id == bindparam("b_job_id"), _holds.c.status == HoldStatus.captured)
    .values(status=HoldStatus.refunded, resolved_at=bindparam("now"))
    .returning(_holds.c.id, _holds.c.user_id, _holds.c.amount)
)


async def refund(session: AsyncSession, job_id: uuid.UUID, *, note: str | None = None) -> Resolved | None:
    """Give a captured job's charge back, exactly once, to the grants it was taken from (what goes
    back to a grant that has expired since is removed again at once), ``note`` in its entry; None
    when the job's hold is not captured (never charged, or refunded already)."""
    now = utcnow()
    hold = (await session.execute(_REFUND_HOLD, {"b_job_id": job_id, "now": now})).one_or_none()
    if hold is None:
        return None
    hold_id, user_id, amount = hold
    balance, held = (
        await session.execute(_MOVE, {"b_user_id": user_id, "amount": amount, "held_delta": 0, "now": now})
    ).one()
    entry_id = await _entry(session, user_id, EntryType.refund, amount, 0, balance, held, job_id, now, note)
    alerts.watch(session, [user_id], alerts.Review.credit)
    connection = await session.connection()
    charged = [(g, -a) for g, a, _ in await grants.held_by_job(connection, job_id) if a < 0]
    await grants.post(connection, entry_id, [grants.Move(g, n, 0) for g, n in charged], job_id)
    before_grants = amount - sum(n for _, n in charged)
    if before_grants > 0:
        # Charged before grants existed (migration 0013): given back as a paid grant of its own.
        await grants.open_grant(
            session, user_id, entry_id, kind=GrantKind.paid, source=GrantSource.migrated, amount=before_grants
        )
    if charged:
        ids = [g for g, _ in charged]
        await _expire_returned(session, user_id, (await session.execute(_GRANTS_OF, {"ids": ids})).all())
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
