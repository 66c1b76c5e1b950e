"""Who is looking at a page: the cookie session, or nobody (then pages that need one redirect)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from mlservice.deps import SessionDep, get_components
from mlservice.errors import Forbidden
from mlservice.users.auth import fastapi_users, get_jwt_strategy
from mlservice.users.manager import UserDatabase, UserManager
from mlservice.users.tables import User
from mlservice.users.transports import COOKIE_NAME
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import Wallet
from mlservice.web.render import LoginRequired

log = logging.getLogger(__name__)

_optional_user = fastapi_users.current_user(optional=True, active=True)

OptionalUser = Annotated[User | None, Depends(_optional_user)]


async def page_user(request: Request, user: OptionalUser) -> User:
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # After logging in the browser GETs the target: a form's action would answer 405 to that.
        raise LoginRequired(target if request.method in ("GET", "HEAD") else "/")
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


async def viewer_from_cookie(request: Request) -> tuple[User | None, Wallet | None]:
    """Who sent ``request``, read straight from the session cookie, for pages rendered outside the
    dependency system (error pages): a signed-in visitor keeps the navigation on a 404.

    Best effort: any failure (no cookie, a bad token, the database unreachable) means anonymous.
    """
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None, None
    components = get_components(request)
    try:
        async with components.db.session() as session:
            manager = UserManager(
                UserDatabase(session, components.settings.signup_bonus), components.settings
            )
            user = await get_jwt_strategy(request).read_token(token, manager)
            if user is None or not user.is_active:
                return None, None
            return user, await wallet_service.get_wallet(session, user.id)
    except Exception:  # an error page must render whatever went wrong here
        log.warning("could not identify the visitor of an error page", exc_info=True)
        return None, None
