"""Credit grants: which credits a spend draws on, and every movement of a grant as a posting.

A wallet's credits are split into grants (:class:`~mlservice.wallet.tables.CreditGrant`). A spend
draws on the grants that have free credit (remaining less held) and have not expired, in the
spending order: lower ``priority`` first, then the earliest expiry (none last), a bonus before
paid credits at equal rank, then the oldest. A hold's draws are postings of its ledger entry
(``held_delta`` per grant); a capture charges exactly those, a release returns them, a refund
gives back what the capture took, each as postings that name the grant and the job.

Expiry never takes held credit: an expired grant loses its free credit (one ``expiry`` entry per
grant); what is held stays until the hold resolves, and what a release or refund then returns to
an expired grant is removed at once, with an entry of its own.

Everything here runs with the user's wallet locked (:func:`mlservice.wallet.service.lock_wallet`):
the wallet row first, then its grants, in every path that changes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Boolean, Table, bindparam, func, insert, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mlservice.types import utcnow
from mlservice.wallet.tables import CreditGrant, GrantKind, GrantPosting, LedgerEntry, Wallet

_grants, _postings, _wallets, _ledger = (
    cast(Table, t.__table__) for t in (CreditGrant, GrantPosting, Wallet, LedgerEntry)
)


def now() -> datetime:
    """The time grants expire by: one function, so a test can move the clock of expiry alone."""
    return utcnow()


def spending_key(grant: Any) -> tuple[Any, ...]:
    """The spending order as a sort key (the SQL of :mod:`mlservice.jobs.admission` mirrors it)."""
    expires = grant.expires_at
    return (
        grant.priority,
        expires is None,
        expires or datetime.min,
        0 if grant.kind == GrantKind.bonus else 1,
        grant.id,
    )


def expired(grant: Any, at: datetime) -> bool:
    return grant.expires_at is not None and grant.expires_at <= at


def plan(grants: Iterable[Any], amount: int, at: datetime) -> list[tuple[int, int]]:
    """Draws of ``amount`` as (grant id, credits), in spending order over the unexpired grants'
    free credit; they add up to less than ``amount`` when those cannot cover it."""
    draws: list[tuple[int, int]] = []
    left = amount
    for grant in sorted(grants, key=spending_key):
        if left <= 0:
            break
        free = grant.remaining - grant.held
        if free <= 0 or expired(grant, at):
            continue
        take = min(free, left)
        draws.append((grant.id, take))
        left -= take
    return draws


_LIVE = select(
    _grants.c.id,
    _grants.c.kind,
    _grants.c.priority,
    _grants.c.expires_at,
    _grants.c.remaining,
    _grants.c.held,
).where(_grants.c.user_id == bindparam("b_user_id"), _grants.c.remaining > 0)

_MOVE_GRANT = (
    update(_grants)
    .where(_grants.c.id == bindparam("b_grant_id"))
    .values(
        remaining=_grants.c.remaining + bindparam("b_amount", type_=BigInteger),
        held=_grants.c.held + bindparam("b_held_delta", type_=BigInteger),
    )
)
_POST = insert(_postings)
# What a job's hold still has on each grant, and what its capture charged: its postings summed.
_BY_JOB = (
    select(
        _postings.c.grant_id,
        func.sum(_postings.c.amount).label("amount"),
        func.sum(_postings.c.held_delta).label("held"),
    )
    .where(_postings.c.job_id == bindparam("b_job_id"))
    .group_by(_postings.c.grant_id)
)


async def live(connection: AsyncConnection, user_id: uuid.UUID) -> Sequence[Any]:
    """The user's grants with credit left (rows with id, kind, priority, expires_at, remaining, held)."""
    return (await connection.execute(_LIVE, {"b_user_id": user_id})).all()


@dataclass(frozen=True)
class Move:
    """One posting to write: ``amount`` changes the grant's remaining, ``held_delta`` its held."""

    grant_id: int
    amount: int
    held_delta: int


async def post(
    connection: AsyncConnection, entry_id: int | None, moves: Sequence[Move], job_id: uuid.UUID | None
) -> None:
    """Write ``moves`` as postings of the entry ``entry_id`` and move their grants' totals: two
    statements (each one call with many rows), whatever the number of grants."""
    await post_many(connection, [(entry_id, job_id, m) for m in moves])


async def post_many(
    connection: AsyncConnection, postings: Sequence[tuple[int | None, uuid.UUID | None, Move]]
) -> None:
    """:func:`post` for postings of several entries: (entry id, job id, move) each."""
    if not postings:
        return
    await connection.execute(
        _MOVE_GRANT,
        [
            {"b_grant_id": m.grant_id, "b_amount": m.amount, "b_held_delta": m.held_delta}
            for _, _, m in postings
        ],
    )
    await connection.execute(
        _POST,
        [
            {
                "entry_id": entry_id,
                "grant_id": m.grant_id,
                "job_id": job_id,
                "amount": m.amount,
                "held_delta": m.held_delta,
            }
            for entry_id, job_id, m in postings
        ],
    )


async def held_by_job(connection: AsyncConnection, job_id: uuid.UUID) -> list[tuple[int, int, int]]:
    """(grant id, credits posted, credits held) of each grant the job's hold drew on."""
    return [(g, int(a), int(h)) for g, a, h in await connection.execute(_BY_JOB, {"b_job_id": job_id})]


async def open_grant(
    session: AsyncSession,
    user_id: uuid.UUID,
    entry_id: int,
    *,
    kind: GrantKind,
    source: str,
    amount: int,
    expires_at: datetime | None = None,
    priority: int | None = None,
    note: str | None = None,
    created_by: str | None = None,
) -> CreditGrant:
    """A new grant of ``amount`` credits, credited by the entry ``entry_id`` (already flushed)."""
    grant = CreditGrant(
        user_id=user_id,
        kind=kind,
        source=source,
        amount=amount,
        remaining=amount,
        held=0,
        expires_at=expires_at,
        note=note,
        created_by=created_by,
    )
    if priority is not None:
        grant.priority = priority
    session.add(grant)
    await session.flush()
    session.add(GrantPosting(entry_id=entry_id, grant_id=grant.id, amount=amount, held_delta=0))
    return grant


_DUE = select(_grants.c.id, _grants.c.user_id).where(
    _grants.c.remaining > _grants.c.held,
    _grants.c.expires_at.is_not(None),
    _grants.c.expires_at <= bindparam("b_now"),
)


async def due_users(session: AsyncSession, at: datetime, limit: int = 500) -> list[uuid.UUID]:
    """Users with a grant that expired and still has free credit (at most ``limit`` grants' worth)."""
    rows = await session.execute(_DUE.limit(limit), {"b_now": at})
    return sorted({user_id for _, user_id in rows})


def free_expired(grants: Iterable[Any], at: datetime) -> list[tuple[int, int]]:
    """(grant id, free credits) of the grants that expired and still have free credit."""
    return [(g.id, g.remaining - g.held) for g in grants if g.remaining > g.held and expired(g, at)]


def active(grant: Any, at: datetime) -> bool:
    return grant.remaining > 0 and not expired(grant, at)


def unexpired_filter(at: Any) -> Any:
    return or_(_grants.c.expires_at.is_(None), _grants.c.expires_at > at)


# PostgreSQL: a hold's capture or release after its wallet moved (so the wallet is locked): the
# entry, one posting per grant it drew on, and those grants' totals, in one statement; it returns
# the grants as they are after it (a release's caller expires what came back to an expired one).
_SETTLE_PG = text(
    """
WITH entry AS (
    INSERT INTO ledger_entries
        (user_id, type, amount, held_delta, balance_after, held_after, job_id, note, created_at)
    VALUES (:user_id, :type, :amount, :held_delta, :balance_after, :held_after, :job_id, NULL, :created_at)
    RETURNING id
), drawn AS (
    SELECT grant_id, CAST(sum(held_delta) AS bigint) AS held
    FROM grant_postings WHERE job_id = :job_id
    GROUP BY grant_id HAVING sum(held_delta) > 0
), moved AS (
    UPDATE credit_grants
    SET remaining = credit_grants.remaining - CASE WHEN :captured THEN drawn.held ELSE 0 END,
        held = credit_grants.held - drawn.held
    FROM drawn WHERE credit_grants.id = drawn.grant_id
    RETURNING credit_grants.id, credit_grants.expires_at, credit_grants.remaining, credit_grants.held
), posted AS (
    INSERT INTO grant_postings (entry_id, grant_id, job_id, amount, held_delta)
    SELECT entry.id, drawn.grant_id, :job_id, CASE WHEN :captured THEN -drawn.held ELSE 0 END, -drawn.held
    FROM entry, drawn
)
SELECT id, expires_at, remaining, held FROM moved
"""
).bindparams(
    bindparam("job_id", type_=_postings.c.job_id.type),
    bindparam("user_id", type_=_ledger.c.user_id.type),
    bindparam("created_at", type_=_ledger.c.created_at.type),
    bindparam("captured", type_=Boolean()),
)


async def settle_pg(connection: AsyncConnection, entry: dict[str, Any], captured: bool) -> Sequence[Any]:
    """PostgreSQL: write ``entry`` (a capture or release of the hold of ``entry["job_id"]``) with
    its postings; the grants it moved, as they are now."""
    return (await connection.execute(_SETTLE_PG, {**entry, "captured": captured})).all()
