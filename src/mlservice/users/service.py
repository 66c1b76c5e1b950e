"""Accounts outside registration: making (or promoting) an administrator, in the caller's unit of
work (see :mod:`mlservice.users.usecases`)."""

from __future__ import annotations

from fastapi_users import InvalidPasswordException, exceptions
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError
from mlservice.settings import Settings
from mlservice.users.manager import UserDatabase, UserManager
from mlservice.users.schemas import UserCreate
from mlservice.users.tables import User


async def make_admin(
    session: AsyncSession, settings: Settings, email: str, password: str
) -> tuple[User, bool]:
    """Create an administrator, or promote the existing account; returns (user, created)."""
    user_db = UserDatabase(session, settings.signup_bonus)
    existing = await user_db.get_by_email(email.strip())
    if existing is not None:
        existing.is_superuser = True
        await session.flush()
        return existing, False
    manager = UserManager(user_db, settings)
    try:
        user = await manager.create(UserCreate(email=email, password=password, is_superuser=True))
    except InvalidPasswordException as exc:
        raise AppError(str(exc.reason), code="invalid_password") from None
    except exceptions.UserAlreadyExists:
        raise AppError(f"{email} already exists", code="email_taken") from None
    return user, True
