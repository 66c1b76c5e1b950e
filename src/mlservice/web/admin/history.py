"""The admin request history pages: the filtered, paged list of requests, and deleting old ones."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mlservice.admin import service as admin_service
from mlservice.admin import usecases as admin_usecases
from mlservice.catalog import service as catalog
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.history import service as history
from mlservice.users.principals import Principal
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import Wallet
from mlservice.web.admin.formatting import admin_page, when
from mlservice.web.admin.inputs import CsrfField, InputProblem, TextField, parse_moment
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageAdmin, PageWallet
from mlservice.web.render import redirect

router = APIRouter(prefix="/admin", include_in_schema=False)

HISTORY_PER_PAGE = 50
STATUSES = [status.value for status in history.RequestStatus]


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


@router.get("/history", response_class=HTMLResponse)
async def request_history(
    request: Request,
    admin: PageAdmin,
    wallet: PageWallet,
    session: SessionDep,
    components: ComponentsDep,
    email: str = "",
    model: str = "",
    status: str = "",
    since: str = "",
    until: str = "",
    cursor: str = "",
) -> Response:
    values = {"email": email, "model": model, "status": status, "since": since, "until": until}
    values = {k: v.strip()[:320] for k, v in values.items()}
    problems: list[str] = []
    try:
        chosen = history.RequestStatus(values["status"]) if values["status"] else None
    except ValueError:
        problems.append(f"Status: choose one of {', '.join(STATUSES)}.")
        chosen = None
    moments: dict[str, datetime | None] = {}
    for name, label in (("since", "From"), ("until", "To")):
        try:
            moments[name] = parse_moment(values[name], label, end_of_day=name == "until")
        except InputProblem as exc:
            problems.append(str(exc))
    items: Sequence[Any] = []
    next_link = None
    if not problems:
        filters = history.HistoryFilter(
            email=values["email"] or None,
            model=values["model"][:64] or None,
            status=chosen,
            since=moments.get("since"),
            until=moments.get("until"),
        )
        found = await history.list_requests(
            session, components.predictors, filters, limit=HISTORY_PER_PAGE, cursor=cursor or None
        )
        items = found.items
        if found.next_cursor:
            next_link = "/admin/history?" + urlencode(
                {**{k: v for k, v in values.items() if v}, "cursor": found.next_cursor}
            )
    filtered = {k: v for k, v in values.items() if v}
    return admin_page(
        request,
        "history.html",
        admin=admin,
        wallet=wallet,
        section="history",
        items=items,
        values=values,
        statuses=STATUSES,
        models=await catalog.list_models(session, include_disabled=True),
        problems=problems,
        paged=bool(cursor),
        first_link="/admin/history" + (f"?{urlencode(filtered)}" if filtered else ""),
        next_link=next_link,
        status_code=422 if problems else 200,
    )


def _delete_page(
    request: Request,
    admin: Principal,
    wallet: Wallet | None,
    before: datetime | None,
    before_text: str,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    return admin_page(
        request,
        "history_delete.html",
        admin=admin,
        wallet=wallet,
        section="history",
        before=before,
        before_text=before_text,
        error=error,
        status_code=status_code,
    )


@router.get("/history/delete", response_class=HTMLResponse)
async def confirm_delete_history(
    request: Request, admin: PageAdmin, wallet: PageWallet, before: str = ""
) -> Response:
    """The confirmation step: what would be deleted, and the admin token that allows it."""
    try:
        moment = parse_moment(before, "Before")
    except InputProblem as exc:
        return redirect("/admin/history#delete", error=str(exc))
    return _delete_page(request, admin, wallet, moment, before.strip())


@router.post("/history/delete", response_class=HTMLResponse)
async def delete_history(
    request: Request,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    before: TextField = "",
    admin_token: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    try:
        moment = parse_moment(before, "Before")
    except InputProblem as exc:
        return redirect("/admin/history#delete", error=str(exc))
    try:
        # The same second factor as the API's X-Admin-Token header.
        admin_service.check_admin_token(components.settings.admin_token, admin_token)
    except admin_service.BadAdminToken:
        wallet = await wallet_service.get_wallet(session, admin.id)
        problem = "That is not the server's admin token; nothing was deleted."
        return _delete_page(request, admin, wallet, moment, before, error=problem, status_code=403)
    except admin_service.AdminTokenNotConfigured as exc:
        wallet = await wallet_service.get_wallet(session, admin.id)
        return _delete_page(request, admin, wallet, moment, before, error=exc.message, status_code=403)
    # No read connection held while the use case waits for the writer.
    await session.close()
    deleted = await admin_usecases.delete_history(components, before=moment)
    scope = f" that arrived before {when(moment)} UTC" if moment else ""
    return redirect(
        "/admin/history", notice=f"Deleted {_plural(deleted, 'request')}{scope} from the history."
    )
