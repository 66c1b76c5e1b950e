"""Authentication: JWT as a bearer token for API clients and in a cookie for the web UI, and
API keys (``mls_…``) as bearer tokens for programs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi_users import FastAPIUsers
from fastapi_users.authentication import AuthenticationBackend

from mlservice.apikeys.auth import ApiKeyTransport, get_api_key_strategy
from mlservice.deps import AuthSessionDep, SettingsDep
from mlservice.errors import Forbidden
from mlservice.observability.context import note_user
from mlservice.security.tokens import StrictJWTStrategy
from mlservice.users.manager import UserDatabase, UserManager
from mlservice.users.tables import User
from mlservice.users.transports import bearer_transport, cookie_transport


async def get_user_db(session: AuthSessionDep, settings: SettingsDep) -> AsyncIterator[UserDatabase]:
    yield UserDatabase(session, settings.signup_bonus)


async def get_user_manager(
    user_db: Annotated[UserDatabase, Depends(get_user_db)], settings: SettingsDep
) -> AsyncIterator[UserManager]:
    yield UserManager(user_db, settings)


def get_jwt_strategy(request: Request) -> StrictJWTStrategy[User, uuid.UUID]:
    settings = request.app.state.components.settings
    # HS256 only, `exp` required: see StrictJWTStrategy.
    return StrictJWTStrategy(
        secret=settings.jwt_secret_value(), lifetime_seconds=settings.jwt_lifetime_seconds
    )


jwt_backend = AuthenticationBackend(name="jwt", transport=bearer_transport, get_strategy=get_jwt_strategy)
cookie_backend = AuthenticationBackend(
    name="cookie", transport=cookie_transport, get_strategy=get_jwt_strategy
)

# Tried after the JWT: the JWT strategy refuses an `mls_` key quietly (it is no JWT), and an
# explicit Authorization header goes before an ambient cookie. No login routes: keys come from /api/keys.
api_key_backend = AuthenticationBackend(
    name="api-key", transport=ApiKeyTransport(), get_strategy=get_api_key_strategy
)

fastapi_users = FastAPIUsers[User, uuid.UUID](
    get_user_manager, [jwt_backend, api_key_backend, cookie_backend]
)


_library_current_user = fastapi_users.current_user(active=True)


async def current_active_user(user: Annotated[User, Depends(_library_current_user)]) -> User:
    # The session that read the user stays open for the request's own reads (one connection,
    # one transaction); a write session closes it before waiting for the writer (see deps).
    note_user(user.id)  # the request's log event names its user
    return user


async def require_admin(user: Annotated[User, Depends(current_active_user)]) -> User:
    if not user.is_superuser:
        raise Forbidden("Administrators only.", code="admin_required")
    return user


CurrentUser = Annotated[User, Depends(current_active_user)]
AdminUser = Annotated[User, Depends(require_admin)]
