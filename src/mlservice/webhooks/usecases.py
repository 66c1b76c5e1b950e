"""The webhook signing secret's operations, each owning its unit of work: read it (made on first
use) and rotate it. ``/api/webhooks/secret`` and ``/api/webhooks/secret/rotate`` only translate.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from mlservice.webhooks import service

if TYPE_CHECKING:
    from mlservice.components import Components


async def get_signing_secret(components: Components, user_id: uuid.UUID) -> str:
    """The secret the user's webhooks are signed with.

    A write: a user who has none yet gets one now, so that what this returns is the secret the
    next delivery is signed with.
    """
    async with components.db.session(write=True) as session:
        return await service.secret_of(session, user_id)


async def rotate_signing_secret(components: Components, user_id: uuid.UUID) -> str:
    """Replace the user's secret; every attempt from now on, retries included, is signed with the
    new one, which is returned."""
    async with components.db.session(write=True) as session:
        return await service.rotate_secret(session, user_id)
