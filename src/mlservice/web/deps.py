"""Who is looking at a page: the cookie session, or nobody (then pages that need one redirect)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlservice.deps import SessionDep
from mlservice.errors import Forbidden
from mlservice.users.auth import fastapi_users
from mlservice.users.tables import User
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import Wallet
from mlservice.web.render import LoginRequired

_optional_user = fastapi_users.current_user(optional=True, active=True)

OptionalUser = Annotated[User | None, Depends(_optional_user)]


async def page_user(request: Request, user: OptionalUser) -> User:
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return user


PageUser = Annotated[User, Depends(page_user)]


async def page_admin(user: PageUser) -> User:
    if not user.is_superuser:
        raise Forbidden("Administrators only.", code="admin_required")
    return user


PageAdmin = Annotated[User, Depends(page_admin)]


async def page_wallet(user: PageUser, session: SessionDep) -> Wallet:
    """The signed-in user's wallet, for the balance in the page header."""
    return await wallet_service.get_wallet(session, user.id)


PageWallet = Annotated[Wallet, Depends(page_wallet)]
