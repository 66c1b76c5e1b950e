"""The files of ``/v1/files``: uploaded, listed, read and deleted by their owner only.

A row of :class:`~mlservice.uploads.tables.UploadedFile` describes each; its bytes are in storage
under :func:`upload_key`. Predictions take an upload by its URL (see :mod:`mlservice.replicate.inputs`).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import after_rollback
from mlservice.predictors.base import InvalidInput
from mlservice.replicate.errors import TooManyFiles, UploadedFileNotFound
from mlservice.replicate.schemas import FileRead
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.uploads.repository import upload_key
from mlservice.uploads.tables import UploadedFile

# Uploads are inputs waiting for a prediction, not a file store: they expire (after
# MLSERVICE_RETENTION_UPLOADS_HOURS, a day by default; the retention sweep then removes them), and
# each user may keep only so many at once (uploads cost nothing, so nothing else would bound the
# disk they use).
FILE_LIFETIME = timedelta(hours=24)
MAX_LIVE_FILES = 100
MAX_METADATA_CHARS = 10_000
MAX_METADATA_BYTES = MAX_METADATA_CHARS * 4  # as UTF-8

# Dropped from a file's name and media type: the caller chose both, and they are shown back.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def parse_metadata(raw: str | bytes | None) -> dict[str, Any]:
    """A file's ``metadata``: a form field's text, or the bytes of a part of its own (UTF-8 JSON)."""
    too_long = InvalidInput(
        f"`metadata` is limited to {MAX_METADATA_CHARS} characters.", code="invalid_metadata"
    )
    if isinstance(raw, bytes):
        if len(raw) > MAX_METADATA_BYTES:
            raise too_long
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("`metadata` must be UTF-8 JSON.", code="invalid_metadata") from None
    if raw is None or not raw.strip():
        return {}
    if len(raw) > MAX_METADATA_CHARS:
        raise too_long
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInput("`metadata` must be a JSON object.", code="invalid_metadata") from None
    if not isinstance(value, dict):
        raise InvalidInput("`metadata` must be a JSON object.", code="invalid_metadata")
    return value


async def _remove_upload(session: AsyncSession, storage: Storage, row: UploadedFile) -> None:
    await session.execute(delete(UploadedFile).where(UploadedFile.id == row.id))
    await storage.delete(upload_key(row.id), session=session)


async def create_upload(
    session: AsyncSession,
    storage: Storage,
    user_id: uuid.UUID,
    *,
    data: bytes,
    name: str,
    content_type: str,
    metadata: dict[str, Any],
    lifetime: timedelta = FILE_LIFETIME,
) -> UploadedFile:
    now = utcnow()
    # The user's expired uploads go first: they stop counting, and storage stops holding them.
    expired = await session.scalars(
        select(UploadedFile)
        .where(UploadedFile.user_id == user_id, UploadedFile.expires_at <= now)
        .limit(MAX_LIVE_FILES)
    )
    for row in list(expired):
        await _remove_upload(session, storage, row)
    live = await session.scalar(
        select(func.count())
        .select_from(UploadedFile)
        .where(UploadedFile.user_id == user_id, UploadedFile.expires_at > now)
    )
    if (live or 0) >= MAX_LIVE_FILES:
        raise TooManyFiles(
            f"You keep {MAX_LIVE_FILES} uploaded files already; delete some (DELETE /v1/files/{{id}}) "
            "or wait until they expire.",
            limit=MAX_LIVE_FILES,
        )
    upload = UploadedFile(
        id=uuid.uuid4(),
        user_id=user_id,
        name=_CONTROL.sub("", name)[:255] or "file",
        content_type=_CONTROL.sub("", content_type)[:255] or "application/octet-stream",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        file_metadata=metadata,
        created_at=now,
        expires_at=now + lifetime,
    )
    session.add(upload)
    await session.flush()
    key = upload_key(upload.id)
    await storage.put(key, data, session=session)
    after_rollback(session, lambda: storage.delete(key))
    return upload


async def get_upload(session: AsyncSession, user_id: uuid.UUID, file_id: str) -> UploadedFile:
    """The caller's unexpired upload; anybody else's, or an expired one, is not found."""
    try:
        key = uuid.UUID(file_id)
    except ValueError:
        raise UploadedFileNotFound("File not found.") from None
    row = await session.get(UploadedFile, key)
    if row is None or row.user_id != user_id or row.expires_at <= utcnow():
        raise UploadedFileNotFound("File not found.")
    return row


async def read_upload(
    session: AsyncSession, storage: Storage, user_id: uuid.UUID, file_id: str
) -> tuple[UploadedFile, bytes]:
    row = await get_upload(session, user_id, file_id)
    try:
        return row, await storage.get(upload_key(row.id), session=session)
    except FileNotFoundError:
        raise UploadedFileNotFound("The file is no longer stored.") from None


async def list_uploads(session: AsyncSession, user_id: uuid.UUID) -> list[UploadedFile]:
    """Every unexpired upload of the user, newest first (at most :data:`MAX_LIVE_FILES`)."""
    rows = await session.scalars(
        select(UploadedFile)
        .where(UploadedFile.user_id == user_id, UploadedFile.expires_at > utcnow())
        .order_by(UploadedFile.created_at.desc(), UploadedFile.id.desc())
        .limit(MAX_LIVE_FILES)
    )
    return list(rows)


async def delete_upload(session: AsyncSession, storage: Storage, user_id: uuid.UUID, file_id: str) -> None:
    await _remove_upload(session, storage, await get_upload(session, user_id, file_id))


def file_of(row: UploadedFile, base_url: str) -> FileRead:
    return FileRead(
        id=str(row.id),
        name=row.name,
        content_type=row.content_type,
        size=row.size,
        etag=row.sha256,
        checksums={"sha256": row.sha256},
        metadata=row.file_metadata or {},
        created_at=row.created_at,
        expires_at=row.expires_at,
        urls={"get": f"{base_url}/v1/files/{row.id}"},
    )
