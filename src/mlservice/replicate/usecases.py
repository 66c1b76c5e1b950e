"""The ``/v1/files`` operations that write, each owning its unit of work."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mlservice.replicate import uploads
from mlservice.uploads.tables import UploadedFile

if TYPE_CHECKING:
    from mlservice.components import Components


async def upload_file(
    components: Components,
    user_id: uuid.UUID,
    *,
    data: bytes,
    name: str,
    content_type: str,
    metadata: dict[str, Any],
) -> UploadedFile:
    """Store an upload for later predictions; its row and its bytes commit together."""
    async with components.db.session(write=True) as session:
        return await uploads.create_upload(
            session,
            components.storage,
            user_id,
            data=data,
            name=name,
            content_type=content_type,
            metadata=metadata,
            lifetime=timedelta(hours=components.settings.retention_uploads_hours),
        )


async def delete_file(components: Components, user_id: uuid.UUID, file_id: str) -> None:
    async with components.db.session(write=True) as session:
        await uploads.delete_upload(session, components.storage, user_id, file_id)
