"""The face gallery around face jobs: identification reads the owner's gallery, enrollment adds the
new face to it, each in the job's own transactions (see :mod:`mlservice.jobs.hooks`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.faces import service
from mlservice.jobs.attempts import Claimed
from mlservice.jobs.hooks import JobHooks, NoHooks
from mlservice.predictors.base import Predictor, PredictOutput
from mlservice.predictors.faces import EMBEDDING_KEY, FaceEnroll, FaceIdentify


class GalleryReader(NoHooks):
    """Only the job owner's gallery: nobody is ever matched against another user's faces."""

    async def load_context(self, session: AsyncSession, job: Claimed) -> Any:
        return await service.load_gallery(session, job.user_id)


class GalleryWriter(NoHooks):
    async def on_success(self, session: AsyncSession, job: Claimed, output: PredictOutput) -> None:
        embedding = output.private.get(EMBEDDING_KEY)
        if embedding is None:
            raise RuntimeError("The enrollment output has no embedding to store.")
        entry = await service.add_face(session, job.user_id, str(job.params["label"]), embedding, job.id)
        output.result["face_id"] = str(entry.id)


def face_hooks() -> dict[type[Predictor], JobHooks]:
    return {FaceEnroll: GalleryWriter(), FaceIdentify: GalleryReader()}
