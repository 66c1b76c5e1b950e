"""Messages for linked chats, sent from an outbox: claimed with a lease (a process that dies
mid-send leaves them to another after it), their result written by the attempt that holds them.

The rows are written by whatever makes them due (a low-balance alert, in its unit of work); the
process that runs the bot sends them (:class:`mlservice.bot.notifier.ChatNotifier`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.chats.tables import ChatMessage
from mlservice.orm import delete_some

_messages = cast(Table, ChatMessage.__table__)
MAX_ERROR_LENGTH = 500


@dataclass(frozen=True)
class Outgoing:
    id: int
    chat_id: int
    text: str
    attempts: int


_ANY_DUE = (
    select(_messages.c.id)
    .where(_messages.c.status == "pending", _messages.c.next_attempt_at <= bindparam("now"))
    .limit(1)
)
_CLAIM = (
    update(_messages)
    .where(
        _messages.c.id.in_(
            select(_messages.c.id)
            .where(_messages.c.status == "pending", _messages.c.next_attempt_at <= bindparam("now"))
            .order_by(_messages.c.next_attempt_at, _messages.c.id)
            .limit(bindparam("n"))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        ),
        _messages.c.status == "pending",
    )
    .values(attempts=_messages.c.attempts + 1, next_attempt_at=bindparam("lease_until"))
    .returning(_messages.c.id, _messages.c.chat_id, _messages.c.text, _messages.c.attempts)
)


async def any_due(session: AsyncSession, now: datetime) -> bool:
    return await session.scalar(_ANY_DUE, {"now": now}) is not None


async def claim(session: AsyncSession, now: datetime, lease: timedelta, limit: int) -> list[Outgoing]:
    """Up to ``limit`` due messages, oldest first, each leased until ``now + lease``."""
    rows = await session.execute(_CLAIM, {"now": now, "lease_until": now + lease, "n": limit})
    return sorted((Outgoing(r.id, r.chat_id, r.text, r.attempts) for r in rows), key=lambda m: m.id)


async def record(
    session: AsyncSession,
    message: Outgoing,
    now: datetime,
    *,
    sent: bool,
    retry_at: datetime | None,
    error: str | None,
) -> None:
    """The attempt's result, written only while the message is still this attempt's: sent, to be
    retried at ``retry_at``, or given up (neither)."""
    status = "sent" if sent else "pending" if retry_at is not None else "failed"
    await session.execute(
        update(_messages)
        .where(
            _messages.c.id == message.id,
            _messages.c.status == "pending",
            _messages.c.attempts == message.attempts,
        )
        .values(
            status=status,
            next_attempt_at=retry_at or now,
            last_error=error[:MAX_ERROR_LENGTH] if error else None,
            sent_at=now if sent else None,
        )
    )


async def delete_settled(session: AsyncSession, settled_before: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` sent or given-up messages last tried before ``settled_before``
    (retention, one batch); pending ones stay."""
    return await delete_some(
        session,
        ChatMessage.id,
        ChatMessage.status.in_(("sent", "failed")),
        ChatMessage.next_attempt_at < settled_before,
        limit=limit,
    )
