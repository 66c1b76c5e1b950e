"""Where an upload's bytes are kept, and the SQL that removes expired uploads (retention).

Here rather than in :mod:`mlservice.replicate.uploads` so that a worker, which runs the retention
sweep, loads no ``/v1`` code.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.uploads.tables import UploadedFile


def upload_key(file_id: uuid.UUID) -> str:
    return f"uploads/{file_id}"


async def delete_expired(session: AsyncSession, now: datetime, *, limit: int) -> list[uuid.UUID]:
    """Delete up to ``limit`` uploads expired by ``now``; the ids of those this statement deleted
    (another sweeper's are not counted twice). Their bytes are the caller's to delete."""
    expired = select(UploadedFile.id).where(UploadedFile.expires_at <= now).limit(limit)
    rows = await session.execute(
        delete(UploadedFile)
        .where(UploadedFile.id.in_(expired))
        .returning(UploadedFile.id)
        .execution_options(synchronize_session=False)
    )
    return list(rows.scalars())
