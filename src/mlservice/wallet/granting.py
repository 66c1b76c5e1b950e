"""Credits granted by someone: an administrator's bonus (to a user or to everyone), a promotion."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.users.tables import User
from mlservice.wallet import alerts, grants, service
from mlservice.wallet.errors import GrantNotFound, GrantNotVoidable
from mlservice.wallet.tables import CreditGrant, EntryType, GrantKind, GrantPosting, GrantSource, Wallet


async def grant(
    session: AsyncSession,
    user_id: uuid.UUID,
    amount: int,
    *,
    kind: GrantKind = GrantKind.bonus,
    source: str = GrantSource.admin,
    expires_at: datetime | None = None,
    priority: int | None = None,
    note: str | None = None,
    by: str | None = None,
) -> CreditGrant:
    """Credits granted (an administrator's bonus, a promotion): a ``grant`` entry and the grant."""
    wallet = await service.lock_wallet(session, user_id)
    _, new = await service.credit(
        session,
        wallet,
        EntryType.grant,
        amount,
        kind=kind,
        source=source,
        note=note,
        expires_at=expires_at,
        priority=priority,
        created_by=by,
    )
    return new


async def active_wallets(session: AsyncSession, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
    """The next ``limit`` active accounts with a wallet, in user order, after ``after`` (None: from
    the first): a grant to everyone walks them batch by batch."""
    query = select(Wallet.user_id).join(User, User.id == Wallet.user_id).where(User.is_active.is_(True))
    if after is not None:
        query = query.where(Wallet.user_id > after)
    return list(await session.scalars(query.order_by(Wallet.user_id).limit(limit)))


async def grant_to_each(
    session: AsyncSession,
    users: list[uuid.UUID],
    amount: int,
    *,
    expires_at: datetime | None = None,
    priority: int | None = None,
    note: str | None = None,
    by: str | None = None,
) -> list[CreditGrant]:
    """A bonus grant to each of these users' wallets, all in the caller's unit of work (the
    wallets locked in user order first, as every multi-wallet change locks them)."""
    await service.lock_wallets(session, users)
    return [
        await grant(session, user_id, amount, expires_at=expires_at, priority=priority, note=note, by=by)
        for user_id in sorted(users)
    ]


async def void(session: AsyncSession, grant_id: int, by: str) -> CreditGrant:
    """Take back a grant none of which was spent or is held: a ``void`` entry removes it all, and
    the grant keeps who voided it and when."""
    found = await session.get(CreditGrant, grant_id)
    if found is None:
        raise GrantNotFound("No such grant.")
    wallet = await service.lock_wallet(session, found.user_id)
    await session.refresh(found)
    if found.closed_at is not None or found.remaining != found.amount or found.held != 0:
        raise GrantNotVoidable(
            "Only a grant none of which has been spent or is held can be voided.",
            remaining=found.remaining,
            held=found.held,
        )
    entry = service.post_entry(
        session, wallet, EntryType.void, amount=-found.remaining, note=f"Grant {found.id} voided by {by}"
    )
    alerts.watch(session, [found.user_id], alerts.Review.debit)
    await session.flush()
    session.add(GrantPosting(entry_id=entry.id, grant_id=found.id, amount=-found.remaining, held_delta=0))
    found.remaining = 0
    found.closed_at = grants.now()
    found.voided_by = by
    await session.flush()
    return found
