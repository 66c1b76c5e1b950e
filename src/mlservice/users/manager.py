from __future__ import annotations

import re
import uuid
from typing import Any

from fastapi import Request
from fastapi_users import BaseUserManager, InvalidPasswordException, UUIDIDMixin, exceptions, schemas
from fastapi_users_db_sqlalchemy import SQLAlchemyUserDatabase
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.settings import Settings
from mlservice.users.tables import User
from mlservice.wallet.service import create_wallet

PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why a password is refused, or None. Kept in one place for the API and the CLI."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"The password must be at least {PASSWORD_MIN_LENGTH} characters long."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"The password must be at most {PASSWORD_MAX_LENGTH} characters long."
    if not re.search(r"[^\W\d_]", password) or not re.search(r"\d", password):
        return "The password must contain both letters and digits."
    if email and email.split("@", 1)[0].lower() in password.lower():
        return "The password must not contain your e-mail address."
    return None


class UserDatabase(SQLAlchemyUserDatabase[User, uuid.UUID]):
    """Creates the wallet (and signup bonus) with the user, in the caller's unit of work."""

    def __init__(self, session: AsyncSession, signup_bonus: int) -> None:
        super().__init__(session, User)
        self.signup_bonus = signup_bonus

    async def create(self, create_dict: dict[str, Any]) -> User:
        user = User(**create_dict)
        try:
            async with self.session.begin_nested():
                self.session.add(user)
                await self.session.flush()
        except IntegrityError as exc:
            # Two registrations raced past the e-mail check; the unique index settles it.
            raise exceptions.UserAlreadyExists() from exc
        await create_wallet(self.session, user.id, self.signup_bonus)
        return user


class UserManager(UUIDIDMixin, BaseUserManager[User, uuid.UUID]):
    def __init__(self, user_db: UserDatabase, settings: Settings) -> None:
        super().__init__(user_db)
        secret = settings.jwt_secret_value()
        self.reset_password_token_secret = secret
        self.verification_token_secret = secret

    async def validate_password(self, password: str, user: schemas.BaseUserCreate | User) -> None:
        problem = password_problem(password, user.email)
        if problem:
            raise InvalidPasswordException(reason=problem)

    async def on_after_register(self, user: User, request: Request | None = None) -> None:
        return None
