"""Registration, logging in and out (a bearer token for programs, a session cookie for the web UI),
and the signed-in user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, status

from mlservice.deps import ComponentsDep
from mlservice.errors import error_responses
from mlservice.security.limits import RATE_LIMITED_RESPONSE, limit_logins, limit_registrations
from mlservice.users import usecases
from mlservice.users.auth import CurrentUser
from mlservice.users.schemas import AccessToken, UserCreate, UserRead
from mlservice.users.transports import COOKIE_NAME, clear_session_cookie, set_session_cookie

router = APIRouter()

# OAuth2's password form (the fields Swagger UI's "Authorize" sends); the username is the e-mail.
Username = Annotated[str, Form(description="Your e-mail address")]
Password = Annotated[str, Form()]
_LOGIN = {
    "tags": ["auth"],
    "dependencies": [Depends(limit_logins)],
    # 403 password_login_disabled: MLSERVICE_PASSWORD_LOGIN=false (single sign-on only)
    "responses": {**error_responses(400, 403, 422), **RATE_LIMITED_RESPONSE},
}


@router.post("/auth/jwt/login", response_model=AccessToken, **_LOGIN)  # type: ignore[arg-type]
async def jwt_login(components: ComponentsDep, username: Username, password: Password) -> AccessToken:
    """A bearer token for the account (valid for ``MLSERVICE_JWT_LIFETIME_SECONDS``)."""
    return AccessToken(access_token=await usecases.log_in(components, username, password, browser=False))


@router.post(
    "/auth/jwt/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["auth"],
    responses=error_responses(401),
)
async def jwt_logout(user: CurrentUser) -> Response:
    """Nothing to end on the server: a bearer token lives until it expires (forget it client-side;
    use an API key, which can be revoked, for long-lived access)."""
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/auth/cookie/login", status_code=status.HTTP_204_NO_CONTENT, **_LOGIN)  # type: ignore[arg-type]
async def cookie_login(components: ComponentsDep, username: Username, password: Password) -> Response:
    """Start a browser session: the token goes in an HttpOnly cookie."""
    token = await usecases.log_in(components, username, password, browser=True)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    set_session_cookie(response, token)
    return response


@router.post(
    "/auth/cookie/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["auth"],
    responses=error_responses(401),
)
async def cookie_logout(request: Request, user: CurrentUser, components: ComponentsDep) -> Response:
    """End the browser session on the server (the cookie stops working, copies of it too)."""
    await usecases.log_out(components, request.cookies.get(COOKIE_NAME))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookie(response)
    return response


@router.post(
    "/auth/register",
    response_model=UserRead,
    status_code=status.HTTP_201_CREATED,
    tags=["auth"],
    dependencies=[Depends(limit_registrations)],
    responses={**error_responses(400, 403), **RATE_LIMITED_RESPONSE},
)
async def register(body: UserCreate, components: ComponentsDep) -> UserRead:
    user = await usecases.register(components.db, components.settings, body)
    return UserRead.model_validate(user)


@router.get("/users/me", response_model=UserRead, tags=["users"], responses=error_responses(401))
async def me(user: CurrentUser) -> UserRead:
    return UserRead.model_validate(user)
