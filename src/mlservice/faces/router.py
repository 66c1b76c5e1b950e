from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from mlservice.deps import ComponentsDep, OffsetQuery, SessionDep
from mlservice.errors import error_responses
from mlservice.faces import service, usecases
from mlservice.faces.schemas import FacePage, FaceRead
from mlservice.users.auth import CurrentUser

router = APIRouter(prefix="/faces", tags=["faces"], responses=error_responses(401))


@router.get("", response_model=FacePage)
async def list_faces(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
) -> FacePage:
    """Your enrolled faces (enroll with the `face-enroll` model), newest first."""
    page = await service.list_faces(session, user.id, limit=limit, offset=offset)
    return FacePage(
        items=[FaceRead.model_validate(f) for f in page.items], total=page.total, limit=limit, offset=offset
    )


@router.delete(
    "/{face_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def delete_face(
    face_id: uuid.UUID, user: CurrentUser, session: SessionDep, components: ComponentsDep
) -> Response:
    """Remove a face from your gallery; it is never matched again."""
    # The read connection goes back before the use case waits for the writer (see deps).
    await session.close()
    await usecases.delete_face(components, user.id, face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
