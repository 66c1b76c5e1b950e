"""Linking Telegram chats to accounts with one-time codes shown in the user's profile: issuing
codes, linking and unlinking chats, and finding the account a chat acts for.

Everything here works in the caller's unit of work and only flushes; the use cases in
:mod:`mlservice.chats.usecases` own the transactions.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.chats.tables import TelegramLink, TelegramLinkCode
from mlservice.errors import AppError
from mlservice.orm import delete_some
from mlservice.types import utcnow

CODE_LIFETIME = timedelta(minutes=10)
# No 0/O or 1/I: the code is read off a screen and typed into a chat.
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8


class LinkCodeInvalid(AppError):
    status_code = 400
    code = "link_code_invalid"


class LinkCodeExpired(AppError):
    status_code = 400
    code = "link_code_expired"


@dataclass(frozen=True)
class IssuedCode:
    code: str
    expires_at: datetime


def hash_code(code: str) -> str:
    normalized = code.strip().upper().replace("-", "").replace(" ", "")
    return hashlib.sha256(normalized.encode()).hexdigest()


async def issue_link_code(session: AsyncSession, user_id: uuid.UUID) -> IssuedCode:
    """A new code for ``user_id``; the user's earlier codes stop working."""
    await session.execute(delete(TelegramLinkCode).where(TelegramLinkCode.user_id == user_id))
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    expires_at = utcnow() + CODE_LIFETIME
    session.add(TelegramLinkCode(code_hash=hash_code(code), user_id=user_id, expires_at=expires_at))
    await session.flush()
    return IssuedCode(code, expires_at)


async def link_chat(session: AsyncSession, chat_id: int, code: str) -> uuid.UUID:
    """Link ``chat_id`` to the owner of ``code`` (used up either way); returns the user's id."""
    row = await session.get(TelegramLinkCode, hash_code(code), with_for_update=True)
    if row is None:
        raise LinkCodeInvalid("This code is not valid. Get a new one from your profile page.")
    user_id, expires_at = row.user_id, row.expires_at
    await session.delete(row)
    if expires_at <= utcnow():
        raise LinkCodeExpired("This code has expired. Get a new one from your profile page.")
    link = await session.get(TelegramLink, chat_id)
    if link is None:
        session.add(TelegramLink(chat_id=chat_id, user_id=user_id))
    else:
        link.user_id = user_id
        link.created_at = utcnow()
    await session.flush()
    return user_id


async def unlink_chat(session: AsyncSession, chat_id: int) -> bool:
    result = await session.execute(delete(TelegramLink).where(TelegramLink.chat_id == chat_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def linked_user(session: AsyncSession, chat_id: int) -> uuid.UUID | None:
    user_id: uuid.UUID | None = await session.scalar(
        select(TelegramLink.user_id).where(TelegramLink.chat_id == chat_id)
    )
    return user_id


async def delete_expired_codes(session: AsyncSession, now: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` link codes that expired before ``now`` unused (retention, one batch)."""
    return await delete_some(
        session, TelegramLinkCode.code_hash, TelegramLinkCode.expires_at < now, limit=limit
    )
