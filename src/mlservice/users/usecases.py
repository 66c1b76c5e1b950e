"""Account operations, each owning its unit of work: registering (the API and the web page), logging
in and out (a bearer token, or a browser session), and making an administrator (``mlservice
create-admin``).

``register`` and ``create_admin`` take a :class:`~mlservice.db.Database` and the settings, not the
components: ``mlservice create-admin`` runs them with no composition root built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlservice.db import Database
from mlservice.errors import AppError
from mlservice.settings import Settings
from mlservice.users import service
from mlservice.users.schemas import UserCreate
from mlservice.users.service import EmailTaken, InvalidPassword
from mlservice.users.tables import User

if TYPE_CHECKING:
    import uuid

    from mlservice.components import Components

__all__ = [
    "BadCredentials",
    "EmailTaken",
    "InvalidPassword",
    "create_admin",
    "log_in",
    "log_out",
    "register",
    "start_browser_session",
]


class BadCredentials(AppError):
    status_code = 400
    code = "bad_credentials"


async def register(db: Database, settings: Settings, body: UserCreate) -> User:
    """A new account with its wallet and the signup bonus, in one transaction.

    ``email_taken`` when the address has an account (a concurrent registration included),
    ``invalid_password`` when the password rules refuse it; nothing is written then.
    """
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
    for the cookie, that :func:`log_out` ends."""
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


async def log_out(components: Components, token: str | None) -> None:
    """End the browser session ``token`` names, here and (within seconds) in every process."""
    claims = components.tokens.verify(token) if token else None
    if claims is None or claims.session_id is None:
        return
    async with components.db.session(write=True) as session:
        await service.end_session(session, claims.session_id)
    components.principals.forget_session(claims.session_id)
