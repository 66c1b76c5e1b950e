"""API keys: making, listing, revoking and checking them.

A key is ``mls_`` + 40 random base62 characters (about 238 bits, from :mod:`secrets`) + a 6-character
checksum (CRC-32 of the random part, in base62). The prefix makes a leaked key recognisable; the
checksum lets a secret scanner, and this service, tell a real-looking key from a garbled one without
a database lookup. Base62 keeps the whole key one word for a double-click and safe in a URL.

Only the SHA-256 of a key is stored: keys carry far more entropy than passwords, so a fast hash
suffices, and a lookup on the unique hash is the comparison.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import string
import uuid
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.apikeys.tables import ApiKey
from mlservice.errors import Conflict, NotFound
from mlservice.orm import delete_some
from mlservice.types import utcnow
from mlservice.users.tables import User

KEY_PREFIX = "mls_"
_ALPHABET = string.digits + string.ascii_letters
_RANDOM_CHARS = 40
_CHECKSUM_CHARS = 6  # 62**6 > 2**32: a CRC-32 fits
KEY_LENGTH = len(KEY_PREFIX) + _RANDOM_CHARS + _CHECKSUM_CHARS
_KEY_SHAPE = re.compile(rf"{KEY_PREFIX}[0-9A-Za-z]{{{_RANDOM_CHARS + _CHECKSUM_CHARS}}}")
# What lists show of a key: enough to tell keys apart, far too little to guess the rest.
DISPLAY_PREFIX_LENGTH = 12

MAX_ACTIVE_KEYS = 50
# last_used_at is written at most this often per key: a key in a busy loop costs one write a minute.
USE_RECORD_INTERVAL = timedelta(minutes=1)


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class TooManyApiKeys(Conflict):
    code = "too_many_api_keys"


def _checksum(random_part: str) -> str:
    value = zlib.crc32(random_part.encode("ascii"))
    digits = []
    for _ in range(_CHECKSUM_CHARS):
        value, digit = divmod(value, len(_ALPHABET))
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def generate_key() -> str:
    random_part = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))
    return f"{KEY_PREFIX}{random_part}{_checksum(random_part)}"


def is_well_formed(token: str) -> bool:
    """Whether ``token`` has a key's shape and a valid checksum (says nothing about it existing)."""
    if len(token) != KEY_LENGTH or not _KEY_SHAPE.fullmatch(token):
        return False
    random_part = token[len(KEY_PREFIX) : -_CHECKSUM_CHARS]
    return _checksum(random_part) == token[-_CHECKSUM_CHARS:]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


@dataclass(frozen=True)
class NewKey:
    row: ApiKey
    key: str  # the secret itself: shown once, never stored


async def create_key(session: AsyncSession, user_id: uuid.UUID, name: str) -> NewKey:
    # The user's row is locked so that two creations at once cannot both pass the limit
    # (PostgreSQL; SQLite has a single writer, and ignores FOR UPDATE).
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    active = await session.scalar(
        select(func.count()).select_from(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
    )
    if (active or 0) >= MAX_ACTIVE_KEYS:
        raise TooManyApiKeys(
            f"You have {MAX_ACTIVE_KEYS} API keys already; revoke one you no longer use first.",
            limit=MAX_ACTIVE_KEYS,
        )
    key = generate_key()
    row = ApiKey(user_id=user_id, name=name, prefix=key[:DISPLAY_PREFIX_LENGTH], key_hash=hash_key(key))
    session.add(row)
    await session.flush()
    return NewKey(row, key)


async def list_keys(session: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    """The user's keys that still work, newest first (at most :data:`MAX_ACTIVE_KEYS`)."""
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
        .limit(MAX_ACTIVE_KEYS)
    )
    return list(rows)


async def revoke_key(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke one of the user's keys; it stops working with the next request. Someone else's key,
    or one revoked already, is not found."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ApiKeyNotFound("API key not found.")


async def delete_revoked(session: AsyncSession, revoked_before: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` keys revoked before ``revoked_before`` (retention, one batch). A
    deleted key is refused as any unknown key is."""
    return await delete_some(session, ApiKey.id, ApiKey.revoked_at < revoked_before, limit=limit)


def use_is_due(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= USE_RECORD_INTERVAL


async def record_use(session: AsyncSession, key_id: uuid.UUID, now: datetime) -> bool:
    """Set the key's ``last_used_at`` to ``now`` unless it was set less than a minute ago (by a
    request that raced this one, in any process). True when it was written."""
    result = await session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - USE_RECORD_INTERVAL),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
