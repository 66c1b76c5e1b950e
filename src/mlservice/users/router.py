from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends, status
from fastapi.routing import APIRoute
from fastapi_users.authentication import AuthenticationBackend

from mlservice.deps import ComponentsDep
from mlservice.errors import error_responses
from mlservice.security.limits import RATE_LIMITED_RESPONSE, limit_logins, limit_registrations
from mlservice.users import usecases
from mlservice.users.auth import CurrentUser, cookie_backend, fastapi_users, jwt_backend
from mlservice.users.schemas import UserCreate, UserRead
from mlservice.users.tables import User


def _auth_router(backend: AuthenticationBackend[User, uuid.UUID]) -> APIRouter:
    auth_router = fastapi_users.get_auth_router(backend)
    for route in auth_router.routes:
        if isinstance(route, APIRoute):
            # The library declares its own error body; our handlers answer with ours.
            route.responses.update(error_responses(*(int(c) for c in route.responses if 400 <= int(c) < 500)))
            if route.path.endswith("/logout"):
                # Bearer tokens cannot be revoked: the library answers 204 without declaring it.
                route.responses.setdefault(204, {"description": "Logged out"})
    return auth_router


router = APIRouter()
for _backend in (jwt_backend, cookie_backend):
    router.include_router(
        _auth_router(_backend),
        prefix=f"/auth/{_backend.name}",
        tags=["auth"],
        dependencies=[Depends(limit_logins)],
        responses=RATE_LIMITED_RESPONSE,
    )


@router.post(
    "/auth/register",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    tags=["auth"],
    dependencies=[Depends(limit_registrations)],
    responses={**error_responses(400), **RATE_LIMITED_RESPONSE},
)
async def register(body: UserCreate, components: ComponentsDep) -> UserRead:
    user = await usecases.register(components.db, components.settings, body)
    return UserRead.model_validate(user)


@router.get("/users/me", response_model=UserRead, tags=["users"], responses=error_responses(401))
async def me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)
