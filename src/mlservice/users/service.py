"""Accounts in the caller's unit of work: creating one (with its wallet and signup bonus), checking
a password, promoting an administrator, and browser sessions."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError
from mlservice.orm import delete_some
from mlservice.types import utcnow
from mlservice.users.passwords import hash_password, password_problem, verify_password
from mlservice.users.tables import AuthSession, OidcLink, OidcLogin, User
from mlservice.wallet.service import create_wallet


class EmailTaken(AppError):
    status_code = 400
    code = "email_taken"


class InvalidPassword(AppError):
    status_code = 400
    code = "invalid_password"


class EmailUnverified(AppError):
    """A provider's identity names the e-mail of an account but does not vouch for it: linking it
    would hand the account to whoever typed that address at the provider."""

    status_code = 400
    code = "oidc_email_unverified"


class EmailMissing(AppError):
    status_code = 400
    code = "oidc_email_missing"


class AccountInactive(AppError):
    status_code = 403
    code = "account_inactive"


# Stored for accounts made through a provider: no hash of any scheme, so no password matches it.
NO_PASSWORD = "!"  # noqa: S105 (not a secret: a value no hash is)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    # Every path stores addresses lower-cased (see UserCreate), so the unique index answers this.
    user: User | None = await session.scalar(select(User).where(User.email == email.strip().lower()))
    return user


async def create_user(
    session: AsyncSession, email: str, password: str, *, signup_bonus: int, is_superuser: bool = False
) -> User:
    """A new account with its wallet (and the signup bonus); refused before anything is written
    when the password breaks the policy or the address has an account."""
    email = email.strip().lower()
    problem = password_problem(password, email)
    if problem:
        raise InvalidPassword(problem)
    if await get_by_email(session, email) is not None:
        raise EmailTaken("An account with this e-mail address already exists.")
    return await _add_user(
        session,
        email,
        await hash_password(password),
        signup_bonus=signup_bonus,
        is_superuser=is_superuser,
        is_verified=False,
    )


async def _add_user(
    session: AsyncSession,
    email: str,
    hashed_password: str,
    *,
    signup_bonus: int,
    is_superuser: bool,
    is_verified: bool,
) -> User:
    user = User(
        email=email,
        hashed_password=hashed_password,
        is_active=True,
        is_superuser=is_superuser,
        is_verified=is_verified,
    )
    try:
        async with session.begin_nested():
            session.add(user)
            await session.flush()
    except IntegrityError:
        # Two registrations raced past the check above; the unique index settles it.
        raise EmailTaken("An account with this e-mail address already exists.") from None
    await create_wallet(session, user.id, signup_bonus)
    return user


async def check_password(session: AsyncSession, email: str, password: str) -> User | None:
    """The active account with this e-mail and password, or None (the same time either way). A hash
    of an outdated scheme is replaced in the caller's unit of work."""
    user = await get_by_email(session, email)
    valid, new_hash = await verify_password(password, user.hashed_password if user else None)
    if user is None or not valid or not user.is_active:
        return None
    if new_hash is not None:
        user.hashed_password = new_hash
        await session.flush()
    return user


async def make_admin(
    session: AsyncSession, email: str, password: str, *, signup_bonus: int
) -> tuple[User, bool]:
    """Create an administrator, or promote the existing account; returns (user, created)."""
    existing = await get_by_email(session, email)
    if existing is not None:
        existing.is_superuser = True
        await session.flush()
        return existing, False
    return await create_user(session, email, password, signup_bonus=signup_bonus, is_superuser=True), True


async def sign_in_with_provider(
    session: AsyncSession,
    provider: str,
    subject: str,
    email: str | None,
    *,
    email_verified: bool,
    is_admin: bool | None,
    signup_bonus: int,
) -> User:
    """The account of the identity ``subject`` at ``provider``: the linked one; else, when the
    provider verified its e-mail address, the account with that address (then linked) or a new
    account (wallet and signup bonus as a registration, no password). ``is_admin`` (when the provider says)
    sets the role. An inactive account is refused, and nothing is written then."""
    link = await session.get(OidcLink, (provider, subject))
    user = None if link is None else await session.get(User, link.user_id)
    if user is None:
        if email is None:
            raise EmailMissing("The identity provider did not give an e-mail address for this account.")
        user = await get_by_email(session, email)
        if user is not None and not email_verified:
            raise EmailUnverified(
                "An account with this e-mail address exists, and the identity provider has not "
                "verified that the address is yours. Log in with the password, or verify the "
                "address at the provider."
            )
        if not email_verified:
            # A new account on an unverified address would be linked, at its owner's first
            # verified login, to an account the first one still reaches: refused as well.
            raise EmailUnverified(
                "The identity provider has not verified your e-mail address. Verify it there, "
                "then log in again."
            )
    if user is not None and not user.is_active:
        raise AccountInactive("This account is deactivated.")
    if user is None:
        assert email is not None
        user = await _add_user(
            session,
            email,
            NO_PASSWORD,
            signup_bonus=signup_bonus,
            is_superuser=bool(is_admin),
            is_verified=True,
        )
    if link is None:
        try:
            async with session.begin_nested():
                session.add(OidcLink(provider=provider, subject=subject, user_id=user.id))
                await session.flush()
        except IntegrityError:
            # The same identity's first login twice at once: the other one linked it.
            raise EmailTaken("This identity was linked a moment ago: log in again.") from None
    else:
        link.last_login_at = utcnow()
    if is_admin is not None:
        user.is_superuser = is_admin
    await session.flush()
    return user


async def remember_login(session: AsyncSession, login: OidcLogin) -> None:
    """Keep a login sent to a provider, and drop those that were never answered in time."""
    await session.execute(delete(OidcLogin).where(OidcLogin.expires_at < utcnow()))
    session.add(login)
    await session.flush()


async def take_login(session: AsyncSession, provider: str, state: str) -> OidcLogin | None:
    """The login ``state`` names, removed so that it works once; None when there is none (never
    sent, answered already, or expired)."""
    login = await session.get(OidcLogin, state)
    if login is None or login.provider != provider:
        return None
    deleted = await session.execute(
        delete(OidcLogin).where(OidcLogin.state == state).execution_options(synchronize_session=False)
    )
    # Two answers with one state at once: only the one that deleted the row goes on.
    if getattr(deleted, "rowcount", 0) != 1 or login.expires_at <= utcnow():
        return None
    return login


async def start_session(
    session: AsyncSession, user_id: uuid.UUID, lifetime_seconds: int, *, provider: str | None = None
) -> uuid.UUID:
    signed_in = AuthSession(
        user_id=user_id, expires_at=utcnow() + timedelta(seconds=lifetime_seconds), provider=provider
    )
    session.add(signed_in)
    await session.flush()
    return signed_in.id


async def end_session(session: AsyncSession, session_id: uuid.UUID) -> str | None:
    """End a browser session; the provider it signed in through, if any."""
    provider: str | None = await session.scalar(
        select(AuthSession.provider).where(AuthSession.id == session_id)
    )
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return provider


async def delete_finished_sessions(session: AsyncSession, now: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` browser sessions that expired or were logged out before ``now``
    (retention, one batch): their cookies are refused either way, so the rows tell nothing more."""
    finished = or_(AuthSession.expires_at < now, AuthSession.ended_at < now)
    return await delete_some(session, AuthSession.id, finished, limit=limit)
