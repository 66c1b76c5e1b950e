from __future__ import annotations

from fastapi_users import InvalidPasswordException, exceptions

from mlservice.db import Database
from mlservice.errors import AppError
from mlservice.settings import Settings
from mlservice.users.manager import UserDatabase, UserManager
from mlservice.users.schemas import UserCreate
from mlservice.users.tables import User


async def create_admin(db: Database, settings: Settings, email: str, password: str) -> tuple[User, bool]:
    """Create an administrator, or promote the existing account; returns (user, created)."""
    async with db.session(write=True) as session:
        user_db = UserDatabase(session, settings.signup_bonus)
        existing = await user_db.get_by_email(email.strip())
        if existing is not None:
            existing.is_superuser = True
            return existing, False
        manager = UserManager(user_db, settings)
        try:
            user = await manager.create(UserCreate(email=email, password=password, is_superuser=True))
        except InvalidPasswordException as exc:
            raise AppError(str(exc.reason), code="invalid_password") from None
        except exceptions.UserAlreadyExists:
            raise AppError(f"{email} already exists", code="email_taken") from None
        return user, True
