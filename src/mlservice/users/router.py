from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi_users import exceptions as user_errors

from mlservice.deps import SettingsDep, WriteSessionDep
from mlservice.errors import AppError
from mlservice.security.ratelimit import RATE_LIMITED_RESPONSE, limit_logins, limit_registrations
from mlservice.users.auth import CurrentUser, cookie_backend, fastapi_users, jwt_backend
from mlservice.users.manager import UserDatabase, UserManager
from mlservice.users.schemas import UserCreate, UserRead

router = APIRouter()
for _backend in (jwt_backend, cookie_backend):
    router.include_router(
        fastapi_users.get_auth_router(_backend),
        prefix=f"/auth/{_backend.name}",
        tags=["auth"],
        dependencies=[Depends(limit_logins)],
        responses=RATE_LIMITED_RESPONSE,
    )


async def get_write_user_manager(session: WriteSessionDep, settings: SettingsDep) -> UserManager:
    return UserManager(UserDatabase(session, settings.signup_bonus), settings)


@router.post(
    "/auth/register",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    tags=["auth"],
    dependencies=[Depends(limit_registrations)],
    responses=RATE_LIMITED_RESPONSE,
)
async def register(
    body: UserCreate, manager: Annotated[UserManager, Depends(get_write_user_manager)]
) -> UserRead:
    try:
        user = await manager.create(body, safe=True)
    except user_errors.UserAlreadyExists:
        raise AppError("An account with this e-mail address already exists.", code="email_taken") from None
    except user_errors.InvalidPasswordException as exc:
        raise AppError(str(exc.reason), code="invalid_password", status_code=400) from None
    return UserRead.model_validate(user)


@router.get("/users/me", response_model=UserRead, tags=["users"])
async def me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)
