"""Authentication: who sent a request, from an ``Authorization`` header (a JWT, or an API key
``mls_…``) or the web UI's session cookie.

One dependency, no database read on a warm path: the token is verified in-process and the account
comes from :class:`~mlservice.users.principals.Principals` (read at most every few seconds). An
explicit ``Authorization`` header goes before an ambient cookie; a header that is not ours falls
back to the cookie, as a browser with both would expect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Query, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import APIKeyCookie, OAuth2PasswordBearer
from fastapi.security.base import SecurityBase

from mlservice.apikeys.service import KEY_PREFIX, use_is_due
from mlservice.errors import AppError, Forbidden
from mlservice.observability.context import note_user
from mlservice.security.signed_urls import TOKEN_PARAMETER
from mlservice.security.tokens import Claims
from mlservice.types import utcnow
from mlservice.users.principals import Principal
from mlservice.users.transports import COOKIE_NAME

if TYPE_CHECKING:
    import uuid

    from mlservice.components import Components

# Clients of other prediction APIs send their keys as `Token <key>`; both words are accepted.
_KEY_SCHEMES = frozenset({"bearer", "token"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 (read only)


class ApiKeyScheme(SecurityBase):
    """Documents API keys in OpenAPI (``Authorization: Bearer mls_…``); reading them is ours."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="mls_…",
            description="An API key made with `POST /api/keys` (or `mlservice login`).",
        )
        self.scheme_name = "APIKey"

    async def __call__(self, request: Request) -> None:
        return None


# The schemes as OpenAPI shows them; their dependencies read nothing (see authenticate).
_bearer_doc = OAuth2PasswordBearer(tokenUrl="/api/auth/jwt/login", auto_error=False)
_key_doc = ApiKeyScheme()
_cookie_doc = APIKeyCookie(name=COOKIE_NAME, auto_error=False)


async def _token_user(components: Components, scheme: str, credentials: str) -> uuid.UUID | None:
    """The account an ``Authorization`` header names, or None (then the cookie may still)."""
    if scheme in _KEY_SCHEMES and credentials.startswith(KEY_PREFIX):
        holder = await components.principals.key_holder(credentials)
        if holder is None:
            return None
        if use_is_due(holder.last_used_at, now := utcnow()):
            # At most once a minute per key; written before the handler runs, so it counts for a
            # request that fails afterwards too.
            await components.api_key_uses.record(components.db, holder.key_id)
            components.principals.key_used(credentials, now)
        return holder.user_id
    if scheme != "bearer":
        return None
    return await _token_holder(components, components.tokens.verify(credentials), session_required=False)


async def _token_holder(
    components: Components, claims: Claims | None, *, session_required: bool
) -> uuid.UUID | None:
    """The account a verified token names; a browser session's token (the cookie's, or the same
    sent as a bearer token) only while the session lives."""
    if claims is None:
        return None
    if claims.session_id is None:
        return None if session_required else claims.user_id
    if await components.principals.session_user(claims.session_id) != claims.user_id:
        return None
    return claims.user_id


async def authenticate(request: Request, *, cookie: bool = True) -> Principal | None:
    """The active account that sent ``request``, or None.

    A request that may write (any method but GET, HEAD, OPTIONS) reads the account afresh, so a
    deactivation or a lost admin role applies to it at once in every process, unless its route
    declared that its write checks the account itself (:func:`account_checked_by_write`).
    """
    components: Components = request.app.state.components
    user_id = None
    header = request.headers.get("authorization")
    if header:
        scheme, _, credentials = header.strip().partition(" ")
        user_id = await _token_user(components, scheme.lower(), credentials.strip())
    if user_id is None and cookie and (token := request.cookies.get(COOKIE_NAME)):
        user_id = await _token_holder(components, components.tokens.verify(token), session_required=True)
    if user_id is None:
        return None
    fresh = request.method not in _SAFE_METHODS and not getattr(request.state, _CHECKED_BY_WRITE, False)
    principal = await components.principals.user(user_id, fresh=fresh)
    if principal is None or not principal.is_active:
        return None
    note_user(principal.id)  # the request's log event names its user
    return principal


_CHECKED_BY_WRITE = "account_checked_by_write"


async def account_checked_by_write(request: Request) -> None:
    """A route dependency, listed before any that authenticates: the route's write refuses an
    inactive account in its own statement (a submit), so the account as this process last read it
    will do (no read of it per request)."""
    setattr(request.state, _CHECKED_BY_WRITE, True)


async def current_active_user(
    request: Request,
    _bearer: Annotated[str | None, Depends(_bearer_doc)],
    _key: Annotated[None, Depends(_key_doc)],
    _cookie: Annotated[str | None, Depends(_cookie_doc)],
) -> Principal:
    principal = await authenticate(request)
    if principal is None:
        raise NotAuthenticated("Authentication required.")
    return principal


async def token_user(
    request: Request,
    _bearer: Annotated[str | None, Depends(_bearer_doc)],
    _key: Annotated[None, Depends(_key_doc)],
) -> Principal:
    """A user by ``Authorization`` header only (``/v1``: no CSRF check, and its clients send tokens)."""
    principal = await authenticate(request, cookie=False)
    if principal is None:
        raise NotAuthenticated("Authentication required.")
    return principal


async def optional_user(request: Request) -> Principal | None:
    """The signed-in user of a page, or None (then pages that need one redirect to the login)."""
    return await authenticate(request)


async def require_admin(user: Annotated[Principal, Depends(current_active_user)]) -> Principal:
    if not user.is_superuser:
        raise Forbidden("Administrators only.", code="admin_required")
    return user


LinkToken = Annotated[
    str | None,
    Query(
        alias=TOKEN_PARAMETER,
        description="The token of a link /v1 gave out (a file output, `urls.stream`): it opens this "
        "path without a credential until it expires",
    ),
]


async def _link_holder(request: Request, token: str) -> Principal:
    components: Components = request.app.state.components
    owner = components.links.owner(request.url.path, token)
    principal = None if owner is None else await components.principals.user(owner)
    if principal is None or not principal.is_active:
        raise Forbidden(
            "This link is invalid or has expired: read the prediction again for a fresh one.",
            code="invalid_link",
        )
    note_user(principal.id)
    return principal


async def link_or_current_user(
    request: Request,
    token: LinkToken = None,
    _bearer: Annotated[str | None, Depends(_bearer_doc)] = None,
    _key: Annotated[None, Depends(_key_doc)] = None,
    _cookie: Annotated[str | None, Depends(_cookie_doc)] = None,
) -> Principal:
    """The owner named by a signed link's ``token``, else the user as ``current_active_user``."""
    if token is not None:
        return await _link_holder(request, token)
    return await current_active_user(request, _bearer, _key, _cookie)


async def link_or_token_user(
    request: Request,
    token: LinkToken = None,
    _bearer: Annotated[str | None, Depends(_bearer_doc)] = None,
    _key: Annotated[None, Depends(_key_doc)] = None,
) -> Principal:
    """The owner named by a signed link's ``token``, else the user as ``token_user``."""
    if token is not None:
        return await _link_holder(request, token)
    return await token_user(request, _bearer, _key)


CurrentUser = Annotated[Principal, Depends(current_active_user)]
AdminUser = Annotated[Principal, Depends(require_admin)]
TokenUser = Annotated[Principal, Depends(token_user)]
OptionalUser = Annotated[Principal | None, Depends(optional_user)]
LinkOrCurrentUser = Annotated[Principal, Depends(link_or_current_user)]
LinkOrTokenUser = Annotated[Principal, Depends(link_or_token_user)]
