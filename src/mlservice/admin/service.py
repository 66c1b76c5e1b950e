"""Administration of accounts, what the credits pages read, and the second factor that guards
destructive admin operations."""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import Conflict, Forbidden, NotFound
from mlservice.history.service import USER_EMAIL
from mlservice.users.tables import User
from mlservice.wallet.tables import CreditGrant, PromoCode, Wallet


class UserNotFound(NotFound):
    code = "user_not_found"


class CannotDemoteSelf(Conflict):
    code = "cannot_demote_self"


class CannotDeactivateSelf(Conflict):
    code = "cannot_deactivate_self"


class AdminTokenNotConfigured(Forbidden):
    code = "admin_token_not_configured"


class BadAdminToken(Forbidden):
    code = "bad_admin_token"


def check_admin_token(configured: SecretStr | None, given: str | None) -> None:
    """Refuse unless ``given`` is the configured admin token (compared in constant time)."""
    expected = configured.get_secret_value() if configured is not None else ""
    if not expected:
        raise AdminTokenNotConfigured(
            "This operation needs MLSERVICE_ADMIN_TOKEN to be set on the server, and it is not."
        )
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise BadAdminToken("Send the server's admin token in the X-Admin-Token header.")


@dataclass
class Account:
    user: User
    wallet: Wallet | None


@dataclass
class AccountPage:
    items: list[Account]
    total: int


async def list_accounts(session: AsyncSession, *, search: str | None, limit: int, offset: int) -> AccountPage:
    """Accounts with their wallets, oldest first; ``search`` matches part of the e-mail address."""
    where = [USER_EMAIL.icontains(search.strip(), autoescape=True)] if search and search.strip() else []
    total = await session.scalar(select(func.count()).select_from(User).where(*where))
    rows = await session.execute(
        select(User, Wallet)
        .outerjoin(Wallet, Wallet.user_id == User.id)
        .where(*where)
        .order_by(User.created_at, User.id)
        .limit(limit)
        .offset(offset)
    )
    return AccountPage([Account(user, wallet) for user, wallet in rows], total or 0)


async def get_account(session: AsyncSession, user_id: uuid.UUID) -> Account:
    user = await session.get(User, user_id, populate_existing=True)
    if user is None:
        raise UserNotFound("There is no user with this id.")
    return Account(user, await session.get(Wallet, user_id, populate_existing=True))


async def update_account(
    session: AsyncSession,
    actor_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    is_superuser: bool | None,
    is_active: bool | None,
) -> Account:
    """Grant or take the admin role, activate or deactivate; never on oneself, so an admin remains."""
    user = await session.get(User, user_id, with_for_update=True, populate_existing=True)
    if user is None:
        raise UserNotFound("There is no user with this id.")
    if user.id == actor_id:
        if is_superuser is False:
            raise CannotDemoteSelf("You cannot remove your own admin role; ask another administrator.")
        if is_active is False:
            raise CannotDeactivateSelf("You cannot deactivate your own account.")
    if is_superuser is not None:
        user.is_superuser = is_superuser
    if is_active is not None:
        user.is_active = is_active
    await session.flush()
    return Account(user, await session.get(Wallet, user_id, populate_existing=True))


async def find_user_id(session: AsyncSession, email: str) -> uuid.UUID:
    """The id of the account with this e-mail address (any case), or ``user_not_found``."""
    found = await session.scalar(select(User.id).where(func.lower(USER_EMAIL) == email.strip().lower()))
    if found is None:
        raise UserNotFound(f"There is no user with the e-mail address {email.strip()}.")
    return found


@dataclass
class GrantRow:
    grant: CreditGrant
    email: str

    @property
    def voidable(self) -> bool:
        """Whether voiding may take it back: none of it spent or held, not closed."""
        g = self.grant
        return g.closed_at is None and g.remaining == g.amount and g.held == 0


async def recent_grants(session: AsyncSession, limit: int) -> list[GrantRow]:
    """The latest grants of every account, newest first, with their owner's e-mail."""
    rows = await session.execute(
        select(CreditGrant, USER_EMAIL)
        .join(User, User.id == CreditGrant.user_id)
        .order_by(CreditGrant.id.desc())
        .limit(limit)
        .execution_options(populate_existing=True)
    )
    return [GrantRow(grant, email) for grant, email in rows]


async def promo_codes(session: AsyncSession, limit: int) -> list[PromoCode]:
    """The latest promotion codes, newest first (each counts its uses)."""
    rows = await session.scalars(
        select(PromoCode).order_by(PromoCode.id.desc()).limit(limit).execution_options(populate_existing=True)
    )
    return list(rows)
