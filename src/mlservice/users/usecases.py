"""Account operations, each owning its unit of work: registering (the API and the web page) and
making an administrator (``mlservice create-admin``).

They take a :class:`~mlservice.db.Database` and the settings, not the components: ``mlservice
create-admin`` runs them with no composition root built (no broker, storage or models).
"""

from __future__ import annotations

from fastapi_users import exceptions as user_errors

from mlservice.db import Database
from mlservice.errors import AppError
from mlservice.settings import Settings
from mlservice.users import service
from mlservice.users.manager import UserDatabase, UserManager
from mlservice.users.schemas import UserCreate
from mlservice.users.tables import User


class EmailTaken(AppError):
    status_code = 400
    code = "email_taken"


class InvalidPassword(AppError):
    status_code = 400
    code = "invalid_password"


async def register(db: Database, settings: Settings, body: UserCreate) -> User:
    """A new account with its wallet and the signup bonus, in one transaction.

    ``email_taken`` when the address has an account (a concurrent registration included),
    ``invalid_password`` when the password rules refuse it; nothing is written then.
    """
    async with db.session(write=True) as session:
        manager = UserManager(UserDatabase(session, settings.signup_bonus), settings)
        try:
            return await manager.create(body, safe=True)
        except user_errors.UserAlreadyExists:
            raise EmailTaken("An account with this e-mail address already exists.") from None
        except user_errors.InvalidPasswordException as exc:
            raise InvalidPassword(str(exc.reason)) from None


async def create_admin(db: Database, settings: Settings, email: str, password: str) -> tuple[User, bool]:
    """Create an administrator (with a wallet and the signup bonus, as any account), or make the
    account with this e-mail one; returns (user, created).

    A password the rules refuse is ``invalid_password``, an e-mail taken by a concurrent
    registration ``email_taken`` (:class:`~mlservice.errors.AppError`).
    """
    async with db.session(write=True) as session:
        return await service.make_admin(session, settings, email, password)
