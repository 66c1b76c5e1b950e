"""Accounts in the caller's unit of work: creating one (with its wallet and signup bonus), checking
a password, promoting an administrator, and browser sessions."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError
from mlservice.orm import delete_some
from mlservice.types import utcnow
from mlservice.users.passwords import hash_password, password_problem, verify_password
from mlservice.users.tables import AuthSession, User
from mlservice.wallet.service import create_wallet


class EmailTaken(AppError):
    status_code = 400
    code = "email_taken"


class InvalidPassword(AppError):
    status_code = 400
    code = "invalid_password"


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
    user = User(
        email=email,
        hashed_password=await hash_password(password),
        is_active=True,
        is_superuser=is_superuser,
        is_verified=False,
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


async def start_session(session: AsyncSession, user_id: uuid.UUID, lifetime_seconds: int) -> uuid.UUID:
    signed_in = AuthSession(user_id=user_id, expires_at=utcnow() + timedelta(seconds=lifetime_seconds))
    session.add(signed_in)
    await session.flush()
    return signed_in.id


async def end_session(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(
        update(AuthSession)
        .where(AuthSession.id == session_id, AuthSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .execution_options(synchronize_session=False)
    )


async def delete_finished_sessions(session: AsyncSession, now: datetime, *, limit: int) -> int:
    """Delete up to ``limit`` browser sessions that expired or were logged out before ``now``
    (retention, one batch): their cookies are refused either way, so the rows tell nothing more."""
    finished = or_(AuthSession.expires_at < now, AuthSession.ended_at < now)
    return await delete_some(session, AuthSession.id, finished, limit=limit)
