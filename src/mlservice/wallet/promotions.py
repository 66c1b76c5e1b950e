"""Promotion codes: an administrator makes one, users redeem it for a bonus grant.

A redemption locks the user's wallet first (as every change of credits does), then takes one use
of the code with a guarded UPDATE (``uses < max_uses`` and not past ``redeem_until``), so the total
never passes ``max_uses`` however many redeem at once; once per user is the unique
(code, user) row, checked under the wallet lock (a user's redemptions are serialized by it).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import Table, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.types import utcnow
from mlservice.wallet import granting, grants, service
from mlservice.wallet.errors import (
    PromoCodeAlreadyRedeemed,
    PromoCodeNotFound,
    PromoCodeTaken,
    PromoCodeUnavailable,
)
from mlservice.wallet.tables import CreditGrant, GrantSource, PromoCode, PromoRedemption


def normalize(code: str) -> str:
    return code.strip().upper()


async def create(
    session: AsyncSession,
    code: str,
    amount: int,
    max_uses: int,
    *,
    redeem_until: datetime | None,
    grant_days: int | None,
    priority: int,
    by: str,
) -> PromoCode:
    promo = PromoCode(
        code=normalize(code),
        amount=amount,
        max_uses=max_uses,
        uses=0,
        redeem_until=redeem_until,
        grant_days=grant_days,
        priority=priority,
        created_by=by,
        created_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(promo)
            await session.flush()
    except IntegrityError:
        raise PromoCodeTaken("A promotion code with this text exists already.") from None
    return promo


_codes = PromoCode.__table__
assert isinstance(_codes, Table)
_TAKE_USE = (
    update(_codes)
    .where(
        _codes.c.id == bindparam("b_id"),
        _codes.c.uses < _codes.c.max_uses,
        or_(_codes.c.redeem_until.is_(None), _codes.c.redeem_until > bindparam("b_now")),
    )
    .values(uses=_codes.c.uses + 1)
    .returning(_codes.c.id)
)


async def redeem(session: AsyncSession, user_id: uuid.UUID, code: str) -> CreditGrant:
    """The bonus grant a redemption of ``code`` makes for the user, exactly once per user."""
    promo = await session.scalar(select(PromoCode).where(PromoCode.code == normalize(code)))
    if promo is None:
        raise PromoCodeNotFound("No such promotion code.")
    await service.lock_wallet(session, user_id)
    seen = await session.scalar(
        select(PromoRedemption.id).where(
            PromoRedemption.code_id == promo.id, PromoRedemption.user_id == user_id
        )
    )
    if seen is not None:
        raise PromoCodeAlreadyRedeemed("You have redeemed this code already.")
    now = grants.now()
    if (await session.execute(_TAKE_USE, {"b_id": promo.id, "b_now": now})).first() is None:
        raise PromoCodeUnavailable("This promotion code has expired or been used up.")
    made = await granting.grant(
        session,
        user_id,
        promo.amount,
        source=GrantSource.promo,
        expires_at=None if promo.grant_days is None else now + timedelta(days=promo.grant_days),
        priority=promo.priority,
        note=f"Promotion code {promo.code}",
    )
    session.add(PromoRedemption(code_id=promo.id, user_id=user_id, grant_id=made.id, created_at=utcnow()))
    await session.flush()
    return made
