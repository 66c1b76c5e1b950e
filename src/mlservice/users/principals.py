"""Who sent a request: the account behind a bearer token, a session cookie or an API key, as this
process last read it.

Reading the account on every request was most of what authentication cost, so what was read is
kept for ``auth_cache_seconds``: a change made through this process (deactivation, a role, a
logout, a revoked key) is forgotten here at once; one made through another process applies within
that time. Writes that must not wait for it check the database themselves (a submit's statement
refuses an inactive account).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cachetools import TTLCache
from sqlalchemy import select

from mlservice.apikeys.service import hash_key, is_well_formed
from mlservice.apikeys.tables import ApiKey
from mlservice.types import utcnow
from mlservice.users.tables import AuthSession, User

if TYPE_CHECKING:
    from mlservice.db import Database

# Enough for every account and key that is busy within a few seconds; the oldest go first.
_MAX_ENTRIES = 100_000

_USER = select(User.id, User.email, User.is_active, User.is_superuser, User.created_at)
_SESSION = select(AuthSession.user_id, AuthSession.expires_at).where(AuthSession.ended_at.is_(None))
_KEY = select(ApiKey.id, ApiKey.user_id, ApiKey.last_used_at).where(ApiKey.revoked_at.is_(None))


@dataclass(frozen=True, slots=True)
class Principal:
    """An account as authentication read it: what routes need to know of the user."""

    id: uuid.UUID
    email: str
    is_active: bool
    is_superuser: bool
    created_at: datetime

    @property
    def role(self) -> str:
        return "admin" if self.is_superuser else "user"


@dataclass(frozen=True, slots=True)
class KeyHolder:
    key_id: uuid.UUID
    user_id: uuid.UUID
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class _Session:
    user_id: uuid.UUID
    expires_at: datetime


class Principals:
    """Accounts, sessions and API keys by id, each read at most once per ``ttl_seconds``."""

    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self._db = db
        ttl = max(ttl_seconds, 1e-9)  # 0: every read goes to the database
        self._users: TTLCache[uuid.UUID, Principal | None] = TTLCache(_MAX_ENTRIES, ttl)
        self._sessions: TTLCache[uuid.UUID, _Session | None] = TTLCache(_MAX_ENTRIES, ttl)
        self._keys: TTLCache[str, KeyHolder | None] = TTLCache(_MAX_ENTRIES, ttl)

    async def user(self, user_id: uuid.UUID, *, fresh: bool = False) -> Principal | None:
        """The account, active or not, or None when there is none."""
        if not fresh:
            try:
                return self._users[user_id]
            except KeyError:
                pass
        async with self._db.session() as session:
            row = (await session.execute(_USER.where(User.id == user_id))).one_or_none()
        found = None if row is None else Principal(*row)
        self._users[user_id] = found
        return found

    async def session_user(self, session_id: uuid.UUID) -> uuid.UUID | None:
        """The account a live (not ended, not expired) browser session belongs to."""
        try:
            live = self._sessions[session_id]
        except KeyError:
            async with self._db.session() as session:
                row = (await session.execute(_SESSION.where(AuthSession.id == session_id))).one_or_none()
            live = None if row is None else _Session(*row)
            self._sessions[session_id] = live
        if live is None or live.expires_at <= utcnow():
            return None
        return live.user_id

    async def key_holder(self, token: str) -> KeyHolder | None:
        """The live API key ``token`` is, and whose it is."""
        if not is_well_formed(token):
            return None
        digest = hash_key(token)
        try:
            return self._keys[digest]
        except KeyError:
            pass
        async with self._db.session() as session:
            row = (await session.execute(_KEY.where(ApiKey.key_hash == digest))).one_or_none()
        found = None if row is None else KeyHolder(*row)
        self._keys[digest] = found
        return found

    def key_used(self, token: str, at: datetime) -> None:
        """A use of the key was recorded: the next is not due for a while."""
        digest = hash_key(token)
        holder = self._keys.get(digest)
        if holder is not None:
            self._keys[digest] = KeyHolder(holder.key_id, holder.user_id, at)

    def forget_user(self, user_id: uuid.UUID) -> None:
        self._users.pop(user_id, None)

    def forget_session(self, session_id: uuid.UUID) -> None:
        self._sessions.pop(session_id, None)

    def forget_key(self, key_id: uuid.UUID) -> None:
        """A key was revoked (by id: its hash is not kept anywhere but here)."""
        for digest, holder in list(self._keys.items()):
            if holder is not None and holder.key_id == key_id:
                self._keys.pop(digest, None)
