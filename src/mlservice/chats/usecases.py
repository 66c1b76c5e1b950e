"""The operations on Telegram chat links, each in its own unit of work: a link code for the profile
page and the API, ``/link`` and ``/unlink`` from the bot, and the account a chat acts for.

The HTTP routes, the web pages and the bot handlers only translate to and from these.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mlservice.chats import messages, service
from mlservice.chats.service import IssuedCode
from mlservice.types import utcnow
from mlservice.users.tables import User

if TYPE_CHECKING:
    from mlservice.components import Components


@dataclass(frozen=True)
class LinkedChat:
    """Whom a chat was linked to; ``email`` is None only if the account vanished meanwhile."""

    user_id: uuid.UUID
    email: str | None


async def create_link_code(components: Components, user_id: uuid.UUID) -> IssuedCode:
    """A new one-time code for ``user_id`` to send as ``/link CODE``; earlier codes stop working."""
    async with components.db.session(write=True) as session:
        return await service.issue_link_code(session, user_id)


async def link_chat(components: Components, chat_id: int, code: str) -> LinkedChat:
    """Link ``chat_id`` to the owner of ``code``, which is used up; a chat linked before now acts
    for that account instead.

    Raises :class:`~mlservice.chats.service.LinkCodeInvalid` or
    :class:`~mlservice.chats.service.LinkCodeExpired` (and nothing is written).
    """
    async with components.db.session(write=True) as session:
        user_id = await service.link_chat(session, chat_id, code)
        # Read in the same transaction: the e-mail the bot confirms is the linked account's.
        user = await session.get(User, user_id)
        return LinkedChat(user_id, user.email if user is not None else None)


async def unlink_chat(components: Components, chat_id: int) -> bool:
    """Unlink ``chat_id``; False when it was not linked."""
    async with components.db.session(write=True) as session:
        return await service.unlink_chat(session, chat_id)


async def chat_user(components: Components, chat_id: int) -> uuid.UUID | None:
    """The account ``chat_id`` acts for, or None when it is not linked (a read)."""
    async with components.db.session() as session:
        return await service.linked_user(session, chat_id)


async def claim_messages(components: Components, lease: timedelta, limit: int) -> list[messages.Outgoing]:
    """Messages for chats that are due, leased to this process (none: a read, no writer taken)."""
    now = utcnow()
    async with components.db.session() as session:
        if not await messages.any_due(session, now):
            return []
    async with components.db.session(write=True) as session:
        return await messages.claim(session, utcnow(), lease, limit)


async def record_message(
    components: Components,
    message: messages.Outgoing,
    *,
    sent: bool,
    retry_at: datetime | None = None,
    error: str | None = None,
) -> None:
    """What an attempt to send ``message`` came to (see :func:`messages.record`)."""
    async with components.db.session(write=True) as session:
        await messages.record(session, message, utcnow(), sent=sent, retry_at=retry_at, error=error)
