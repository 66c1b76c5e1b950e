"""A user's private face gallery. Every query is scoped to one owner: nobody else's faces are
ever listed, matched or deleted."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import NotFound
from mlservice.faces.tables import FaceEntry
from mlservice.predictors.faces.gallery import EMBEDDING_SIZE, Gallery, decode_embedding, encode_embedding


class FaceNotFound(NotFound):
    code = "face_not_found"


async def add_face(
    session: AsyncSession, user_id: uuid.UUID, label: str, embedding: npt.ArrayLike, job_id: uuid.UUID | None
) -> FaceEntry:
    entry = FaceEntry(user_id=user_id, label=label, embedding=encode_embedding(embedding), job_id=job_id)
    session.add(entry)
    await session.flush()
    return entry


async def load_gallery(session: AsyncSession, user_id: uuid.UUID) -> Gallery:
    rows = (
        await session.execute(
            select(FaceEntry.id, FaceEntry.label, FaceEntry.embedding)
            .where(FaceEntry.user_id == user_id)
            .order_by(FaceEntry.created_at)
        )
    ).all()
    embeddings = (
        np.stack([decode_embedding(r.embedding) for r in rows])
        if rows
        else np.zeros((0, EMBEDDING_SIZE), np.float32)
    )
    return Gallery([r.id for r in rows], [r.label for r in rows], embeddings)


@dataclass
class FacePage:
    items: list[FaceEntry]
    total: int


async def list_faces(session: AsyncSession, user_id: uuid.UUID, *, limit: int, offset: int) -> FacePage:
    total = await session.scalar(
        select(func.count()).select_from(FaceEntry).where(FaceEntry.user_id == user_id)
    )
    rows = await session.scalars(
        select(FaceEntry)
        .where(FaceEntry.user_id == user_id)
        .order_by(FaceEntry.created_at.desc())
        .limit(limit)
        .offset(offset)
    )
    return FacePage(list(rows), total or 0)


async def delete_face(session: AsyncSession, user_id: uuid.UUID, face_id: uuid.UUID) -> None:
    entry = await session.get(FaceEntry, face_id)
    if entry is None or entry.user_id != user_id:
        raise FaceNotFound("Face not found.")
    await session.delete(entry)
    await session.flush()
