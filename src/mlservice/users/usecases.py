"""Account operations, each owning its unit of work: registering (the API and the web page), logging
in and out (a bearer token, or a browser session), and making an administrator (``mlservice
create-admin``).

``register`` and ``create_admin`` take a :class:`~mlservice.db.Database` and the settings, not the
components: ``mlservice create-admin`` runs them with no composition root built.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from mlservice.db import Database
from mlservice.errors import AppError, Forbidden
from mlservice.settings import Settings
from mlservice.types import utcnow
from mlservice.users import service
from mlservice.users.oidc import LoginDenied, StateInvalid
from mlservice.users.schemas import UserCreate
from mlservice.users.service import EmailTaken, InvalidPassword
from mlservice.users.tables import OidcLogin, User

if TYPE_CHECKING:
    import uuid

    from mlservice.components import Components

__all__ = [
    "BadCredentials",
    "EmailTaken",
    "InvalidPassword",
    "PasswordLoginDisabled",
    "begin_provider_login",
    "create_admin",
    "finish_provider_login",
    "log_in",
    "log_out",
    "register",
    "start_browser_session",
]


class BadCredentials(AppError):
    status_code = 400
    code = "bad_credentials"


class PasswordLoginDisabled(Forbidden):
    code = "password_login_disabled"


def _check_password_login(settings: Settings) -> None:
    if not settings.password_login:
        raise PasswordLoginDisabled("Passwords are turned off here: log in through the identity provider.")


async def register(db: Database, settings: Settings, body: UserCreate) -> User:
    """A new account with its wallet and the signup bonus, in one transaction.

    ``email_taken`` when the address has an account (a concurrent registration included),
    ``invalid_password`` when the password rules refuse it; nothing is written then.
    """
    _check_password_login(settings)
    async with db.session(write=True) as session:
        return await service.create_user(
            session, body.email, body.password, signup_bonus=settings.signup_bonus
        )


async def create_admin(db: Database, settings: Settings, email: str, password: str) -> tuple[User, bool]:
    """Create an administrator (with a wallet and the signup bonus, as any account), or make the
    account with this e-mail one; returns (user, created).

    A password the rules refuse is ``invalid_password``, an e-mail taken by a concurrent
    registration ``email_taken`` (:class:`~mlservice.errors.AppError`).
    """
    async with db.session(write=True) as session:
        return await service.make_admin(session, email, password, signup_bonus=settings.signup_bonus)


async def log_in(components: Components, email: str, password: str, *, browser: bool) -> str:
    """An access token for the account, or ``bad_credentials`` (a wrong e-mail or password, or an
    inactive account: the same answer, in the same time). ``browser``: the token of a new session,
    for the cookie, that :func:`log_out` ends. ``password_login_disabled`` when the settings turn
    passwords off."""
    _check_password_login(components.settings)
    async with components.db.session(write=True) as session:
        user = await service.check_password(session, email, password)
        if user is None:
            raise BadCredentials("Wrong e-mail or password, or the account is inactive.")
        session_id = None
        if browser:
            session_id = await service.start_session(session, user.id, components.tokens.lifetime_seconds)
    return components.tokens.issue(user.id, session_id=session_id)


async def start_browser_session(components: Components, user_id: uuid.UUID) -> str:
    """The token of a new browser session for an account that just proved who it is (registered)."""
    async with components.db.session(write=True) as session:
        session_id = await service.start_session(session, user_id, components.tokens.lifetime_seconds)
    return components.tokens.issue(user_id, session_id=session_id)


async def log_out(components: Components, token: str | None) -> str | None:
    """End the browser session ``token`` names, here and (within seconds) in every process; the
    name of the OpenID provider it signed in through, if any."""
    claims = components.tokens.verify(token) if token else None
    if claims is None or claims.session_id is None:
        return None
    async with components.db.session(write=True) as session:
        provider = await service.end_session(session, claims.session_id)
    components.principals.forget_session(claims.session_id)
    return provider


async def begin_provider_login(
    components: Components, provider: str, redirect_uri: str, next_path: str
) -> tuple[str, str]:
    """Start a login through an OpenID provider: remember what its answer must match; returns the
    provider's URL to send the browser to and the new ``state`` it carries.

    ``oidc_provider_unavailable`` when its metadata cannot be read; nothing is written then."""
    request = await components.oidc.get(provider).start(redirect_uri)
    expires_at = utcnow() + timedelta(seconds=components.settings.oidc_login_seconds)
    async with components.db.session(write=True) as session:
        await service.remember_login(
            session,
            OidcLogin(
                state=request.state,
                provider=provider,
                nonce=request.nonce,
                code_verifier=request.code_verifier,
                next_path=next_path,
                expires_at=expires_at,
            ),
        )
    return request.url, request.state


async def finish_provider_login(
    components: Components,
    provider: str,
    *,
    state: str | None,
    browser_state: str | None,
    code: str | None,
    error: str | None,
    issuer: str | None = None,
    redirect_uri: str,
) -> tuple[str, str]:
    """The provider's answer: check it, sign the account in (created or linked at its first
    login); returns (the new browser session's token, where to go next).

    ``state`` must be the one this browser was sent with (its cookie) and is used up by the first
    answer that brings it, whatever comes next. Refused answers raise an ``OidcError`` or an
    account error (``oidc_email_unverified``, ``account_inactive``) and create nothing.
    """
    client = components.oidc.get(provider)
    if not state or not browser_state or state != browser_state:
        raise StateInvalid("This login did not start in this browser, or was answered already. Try again.")
    async with components.db.session(write=True) as session:
        login = await service.take_login(session, provider, state)
    if login is None:
        raise StateInvalid("This login expired or was answered already. Try again.")
    if error or not code:
        raise LoginDenied(f"The identity provider did not sign you in ({error or 'no code'}).")
    identity = await client.finish(code, login.code_verifier, login.nonce, redirect_uri, response_iss=issuer)
    settings = components.settings
    async with components.db.session(write=True) as session:
        user = await service.sign_in_with_provider(
            session,
            identity.provider,
            identity.subject,
            identity.email,
            email_verified=identity.email_verified,
            is_admin=identity.is_admin,
            signup_bonus=settings.signup_bonus,
        )
        session_id = await service.start_session(
            session, user.id, components.tokens.lifetime_seconds, provider=provider
        )
    components.principals.forget_user(user.id)  # its role may have changed
    return components.tokens.issue(user.id, session_id=session_id), login.next_path
