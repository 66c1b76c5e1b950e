"""API keys as a fastapi-users authentication backend: ``Authorization: Bearer mls_…``.

The backend is tried after the JWT one (whose strategy refuses an ``mls_`` token quietly: it is no
JWT). A key is looked up in the request's read session, the one that authenticates every request;
recording its use is a separate short write after the response (see :class:`KeyUses`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import NoReturn

from fastapi import Request, Response
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param
from fastapi_users.authentication.strategy import StrategyDestroyNotSupportedError
from fastapi_users.authentication.transport import Transport, TransportLogoutNotSupportedError
from fastapi_users.manager import BaseUserManager
from fastapi_users.openapi import OpenAPIResponseType
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.apikeys import service
from mlservice.deps import AuthSessionDep, ComponentsDep
from mlservice.types import utcnow
from mlservice.users.tables import User

log = logging.getLogger(__name__)

# Clients of other prediction APIs send their keys as `Token <key>`; both words are accepted.
_SCHEMES = frozenset({"bearer", "token"})


class ApiKeyScheme(SecurityBase):
    """The key in the ``Authorization`` header, or None (then other backends decide)."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="mls_…",
            description="An API key made with `POST /api/keys` (or `mlservice login`).",
        )
        self.scheme_name = "APIKey"

    async def __call__(self, request: Request) -> str | None:
        scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() in _SCHEMES and credentials.startswith(service.KEY_PREFIX):
            return credentials
        return None


class ApiKeyTransport(Transport):
    """Reads keys only: there is no logging in or out with a key (they are made and revoked
    through ``/api/keys``), so no auth routes are built for this backend."""

    scheme: ApiKeyScheme

    def __init__(self) -> None:
        self.scheme = ApiKeyScheme()

    async def get_login_response(self, token: str) -> Response:
        raise NotImplementedError("API keys are made with POST /api/keys")

    async def get_logout_response(self) -> Response:
        raise TransportLogoutNotSupportedError()

    @staticmethod
    def get_openapi_login_responses_success() -> OpenAPIResponseType:
        return {}

    @staticmethod
    def get_openapi_logout_responses_success() -> OpenAPIResponseType:
        return {}


class ApiKeyStrategy:
    """Finds the user of a live key; remembers the key when its last use is due to be recorded."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.use_to_record: uuid.UUID | None = None

    async def read_token(
        self, token: str | None, user_manager: BaseUserManager[User, uuid.UUID]
    ) -> User | None:
        if token is None or not token.startswith(service.KEY_PREFIX):
            return None
        found = await service.authenticate(self._session, token)
        if found is None:
            return None
        key, user = found
        if not user.is_active:
            return None
        if service.use_is_due(key.last_used_at, utcnow()):
            self.use_to_record = key.id
        return user

    async def write_token(self, user: User) -> NoReturn:
        raise NotImplementedError("API keys are made with POST /api/keys")

    async def destroy_token(self, token: str, user: User) -> NoReturn:
        raise StrategyDestroyNotSupportedError()


async def get_api_key_strategy(
    session: AuthSessionDep, components: ComponentsDep
) -> AsyncIterator[ApiKeyStrategy]:
    strategy = ApiKeyStrategy(session)
    try:
        yield strategy
    finally:
        # This runs once the response is sent (a request-scoped dependency), or as an error
        # propagates. The read session goes back first: waiting for the writer while holding a
        # pooled connection could starve the request that holds the writer (see deps).
        if strategy.use_to_record is not None:
            await session.close()
            await components.api_key_uses.record(components.db, strategy.use_to_record)
