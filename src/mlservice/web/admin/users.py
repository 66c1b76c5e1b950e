"""The admin users pages: the searchable users list, and the forms that change a user's role,
whether they can sign in, and their balance."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from mlservice.admin import service as admin_service
from mlservice.admin import usecases as admin_usecases
from mlservice.admin.schemas import AdjustmentRequest
from mlservice.deps import MAX_OFFSET, ComponentsDep, SessionDep
from mlservice.errors import AppError
from mlservice.users.principals import Principal
from mlservice.wallet import usecases as wallet_usecases
from mlservice.web.admin.formatting import admin_page
from mlservice.web.admin.inputs import CsrfField, InputProblem, TextField, whole_number
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageAdmin, PageWallet
from mlservice.web.render import redirect, safe_next

if TYPE_CHECKING:
    from mlservice.components import Components

router = APIRouter(prefix="/admin", include_in_schema=False)

USERS_PER_PAGE = 25


def _users_back(value: str) -> str:
    """Where a user action returns to: the users list it was made from (search and page kept)."""
    target = safe_next(value)
    return target if target.startswith("/admin/users") else "/admin/users"


@router.get("/users", response_class=HTMLResponse)
async def users(
    request: Request,
    admin: PageAdmin,
    wallet: PageWallet,
    session: SessionDep,
    search: str = "",
    offset: str = "0",
) -> Response:
    search = search.strip()[:320]
    try:
        start = min(max(int(offset), 0), MAX_OFFSET)
    except ValueError:
        start = 0
    found = await admin_service.list_accounts(session, search=search, limit=USERS_PER_PAGE, offset=start)

    def link(at: int) -> str:
        query = {k: v for k, v in (("search", search), ("offset", str(at) if at else "")) if v}
        return "/admin/users" + (f"?{urlencode(query)}" if query else "")

    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return admin_page(
        request,
        "users.html",
        admin=admin,
        wallet=wallet,
        section="users",
        accounts=found.items,
        total=found.total,
        search=search,
        first=start + 1,
        last=start + len(found.items),
        previous=link(max(start - USERS_PER_PAGE, 0)) if start > 0 else None,
        next=link(start + USERS_PER_PAGE) if start + USERS_PER_PAGE < found.total else None,
        here=here,
    )


async def _update_account(
    components: Components,
    admin: Principal,
    user_id: uuid.UUID,
    back: str,
    *,
    is_superuser: bool | None = None,
    is_active: bool | None = None,
) -> Response:
    target = _users_back(back) + f"#user-{user_id}"
    try:
        account = await admin_usecases.update_account(
            components, admin, user_id, is_superuser=is_superuser, is_active=is_active
        )
    except AppError as exc:
        return redirect(target, error=exc.message)
    email = account.user.email
    if is_superuser is not None:
        done = (
            f"{email} is now an administrator." if is_superuser else f"{email} is no longer an administrator."
        )
    else:
        done = (
            f"{email} can sign in again."
            if is_active
            else f"{email} is deactivated and can no longer sign in."
        )
    return redirect(target, notice=done)


@router.post("/users/{user_id}/role")
async def change_role(
    request: Request,
    user_id: uuid.UUID,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    admin_role: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    # No read connection held while a use case waits for the writer (so in each form route here).
    await session.close()
    return await _update_account(components, admin, user_id, back, is_superuser=admin_role == "1")


@router.post("/users/{user_id}/active")
async def change_active(
    request: Request,
    user_id: uuid.UUID,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    active: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    await session.close()
    return await _update_account(components, admin, user_id, back, is_active=active == "1")


@router.post("/users/{user_id}/adjustments")
async def adjust_balance(
    request: Request,
    user_id: uuid.UUID,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    amount: TextField = "",
    reason: TextField = "",
    back: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    target = _users_back(back) + f"#user-{user_id}"
    try:
        body = AdjustmentRequest(amount=whole_number(amount, "The amount"), note=reason.strip())
    except InputProblem as exc:
        return redirect(target, error=f"{exc} Use a negative number, such as -20, to take credits away.")
    except ValidationError as exc:
        fields = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        problem = (
            "The amount must not be 0."
            if "amount" in fields
            else "Give a reason of at most 500 characters: it is kept in the ledger."
        )
        return redirect(target, error=problem)
    try:
        # Read first, as the page names the account: an unknown id says so here, before the use
        # case (whose own refusal, for the API, is about the wallet).
        account = await admin_service.get_account(session, user_id)
        await session.close()
        done = await wallet_usecases.adjust_balance(components, admin, user_id, body.amount, body.note)
    except AppError as exc:
        return redirect(target, error=f"The balance was not changed: {exc.message}")
    after = done.wallet
    change = f"Added {body.amount:,}" if body.amount > 0 else f"Took {-body.amount:,}"
    return redirect(
        target,
        notice=f"{change} credits {'to' if body.amount > 0 else 'from'} {account.user.email}: "
        f"balance {after.balance:,}, available {after.available:,}.",
    )
