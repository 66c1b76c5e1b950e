"""The API key operations, each owning its unit of work: make a key, revoke one, and record when a
key was last used.

These take the :class:`~mlservice.db.Database` rather than the components: the composition root
holds the recorder of key uses (:class:`mlservice.apikeys.uses.KeyUses`), which calls
:func:`record_key_use`, so naming :class:`~mlservice.components.Components` here, even for type
checking, would be an import cycle.
"""

from __future__ import annotations

import uuid

from mlservice.apikeys import service
from mlservice.apikeys.service import NewKey
from mlservice.db import Database
from mlservice.types import utcnow


async def create_key(db: Database, user_id: uuid.UUID, name: str) -> NewKey:
    """A new key for ``user_id``, with the secret itself (returned this once, never stored).
    Refused with :class:`~mlservice.apikeys.service.TooManyApiKeys` at the limit of active keys."""
    async with db.session(write=True) as session:
        return await service.create_key(session, user_id, name)


async def revoke_key(db: Database, user_id: uuid.UUID, key_id: uuid.UUID) -> None:
    """Revoke one of the user's keys; requests with it are refused from the next one on. Someone
    else's key, or one revoked already, is :class:`~mlservice.apikeys.service.ApiKeyNotFound`."""
    async with db.session(write=True) as session:
        await service.revoke_key(session, user_id, key_id)


async def record_key_use(db: Database, key_id: uuid.UUID) -> bool:
    """Set the key's ``last_used_at`` to now, unless another request did less than a minute ago;
    True when it was written."""
    async with db.session(write=True) as session:
        return await service.record_use(session, key_id, utcnow())
