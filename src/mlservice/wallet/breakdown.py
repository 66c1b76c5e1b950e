"""The wallet as its owner sees it: the totals, credits by kind, what expires soon, the grants."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.wallet import grants
from mlservice.wallet.service import get_wallet
from mlservice.wallet.tables import CreditGrant, GrantKind, GrantPosting, Wallet

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
