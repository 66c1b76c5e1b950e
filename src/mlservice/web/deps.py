"""Who is looking at a page: the cookie session, or nobody (then pages that need one redirect)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from mlservice.deps import SessionDep, components_of
from mlservice.errors import Forbidden
from mlservice.users.auth import OptionalUser, authenticate
from mlservice.users.principals import Principal
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import Wallet
from mlservice.web.render import LoginRequired

log = logging.getLogger(__name__)

__all__ = ["OptionalUser", "PageAdmin", "PageUser", "PageWallet", "viewer_from_cookie"]


async def page_user(request: Request, user: OptionalUser) -> Principal:
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        # After logging in the browser GETs the target: a form's action would answer 405 to that.
        raise LoginRequired(target if request.method in ("GET", "HEAD") else "/")
    return user


PageUser = Annotated[Principal, Depends(page_user)]


async def page_admin(user: PageUser) -> Principal:
    if not user.is_superuser:
        raise Forbidden("Administrators only.", code="admin_required")
    return user


PageAdmin = Annotated[Principal, Depends(page_admin)]


async def page_wallet(user: PageUser, session: SessionDep) -> Wallet:
    """The signed-in user's wallet, for the balance in the page header."""
    return await wallet_service.get_wallet(session, user.id)


PageWallet = Annotated[Wallet, Depends(page_wallet)]


async def viewer_from_cookie(request: Request) -> tuple[Principal | None, Wallet | None]:
    """Who sent ``request``, for pages rendered outside the dependency system (error pages): a
    signed-in visitor keeps the navigation on a 404.

    Best effort: any failure (no cookie, a bad token, the database unreachable) means anonymous.
    """
    try:
        user = await authenticate(request)
        if user is None:
            return None, None
        async with components_of(request).db.session() as session:
            return user, await wallet_service.get_wallet(session, user.id)
    except Exception:  # an error page must render whatever went wrong here
        log.warning("could not identify the visitor of an error page", exc_info=True)
        return None, None
