"""The face gallery's operations that people ask for, each owning its unit of work.

``DELETE /api/faces/{id}`` and the gallery page's delete form only translate to and from these.
(Faces are added and matched by the face models' jobs, in the jobs' transactions: see
:mod:`mlservice.faces.hooks`.)
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from mlservice.faces import service

if TYPE_CHECKING:
    from mlservice.components import Components


async def delete_face(components: Components, user_id: uuid.UUID, face_id: uuid.UUID) -> None:
    """Remove one of the user's faces; it is never matched again. Someone else's face, or one that
    does not exist, is :class:`~mlservice.faces.service.FaceNotFound`."""
    async with components.db.session(write=True) as session:
        await service.delete_face(session, user_id, face_id)
