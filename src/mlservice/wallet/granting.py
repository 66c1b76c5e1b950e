"""Credits granted by someone: an administrator's bonus (to a user or to everyone), a promotion."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.wallet import service
from mlservice.wallet.tables import CreditGrant, EntryType, GrantKind, GrantSource


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
    """Credits granted (an administrator's bonus, a promotion): an ``adjustment`` entry and a grant."""
    wallet = await service.lock_wallet(session, user_id)
    _, new = await service.credit(
        session,
        wallet,
        EntryType.adjustment,
        amount,
        kind=kind,
        source=source,
        note=note,
        expires_at=expires_at,
        priority=priority,
        created_by=by,
    )
    return new
