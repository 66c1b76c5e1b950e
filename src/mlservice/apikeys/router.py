from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, Response, status

from mlservice.apikeys import service, usecases
from mlservice.apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import error_responses
from mlservice.security.limits import RATE_LIMITED_RESPONSE, limit_key_creation
from mlservice.users.auth import CurrentUser

router = APIRouter(prefix="/keys", tags=["api keys"], responses=error_responses(401))


@router.post(
    "",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    # 400: a body that cannot be decoded; 409: the limit of active keys is reached.
    responses={**error_responses(400, 409), **RATE_LIMITED_RESPONSE},
    dependencies=[Depends(limit_key_creation)],
)
async def create_key(body: ApiKeyCreate, user: CurrentUser, components: ComponentsDep) -> ApiKeyCreated:
    """Make an API key, for programs: send it as `Authorization: Bearer <key>` wherever a login
    token works. The key is in this answer only; keep it secret."""
    created = await usecases.create_key(components.db, user.id, body.name)
    return ApiKeyCreated(**ApiKeyRead.model_validate(created.row).model_dump(), key=created.key)


@router.get("", response_model=list[ApiKeyRead])
async def list_keys(user: CurrentUser, session: SessionDep) -> list[ApiKeyRead]:
    """Your keys that work, newest first, without the keys themselves."""
    return [ApiKeyRead.model_validate(k) for k in await service.list_keys(session, user.id)]


@router.delete(
    "/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(404),
)
async def revoke_key(key_id: uuid.UUID, user: CurrentUser, components: ComponentsDep) -> Response:
    """Revoke a key: every request with it is refused from now on."""
    await usecases.revoke_key(components.db, user.id, key_id)
    components.principals.forget_key(key_id)  # in this process at once (others: within seconds)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
