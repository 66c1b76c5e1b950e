"""The admin overview page (``/admin``): how many users and models, and the last 24 hours."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mlservice.admin import service as admin_service
from mlservice.catalog import service as catalog
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.history import service as history
from mlservice.history import statistics
from mlservice.web.admin.formatting import admin_page
from mlservice.web.admin.stats import WINDOWS
from mlservice.web.deps import PageAdmin, PageWallet

router = APIRouter(prefix="/admin", include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def overview(
    request: Request, admin: PageAdmin, wallet: PageWallet, session: SessionDep, components: ComponentsDep
) -> Response:
    accounts = await admin_service.list_accounts(session, search=None, limit=1, offset=0)
    models = await catalog.list_models(session, include_disabled=True)
    since, until = history.check_period(None, None, WINDOWS["24h"])
    day = await statistics.compute(session, components.predictors, since, until)
    return admin_page(
        request,
        "index.html",
        admin=admin,
        wallet=wallet,
        section="overview",
        users=accounts.total,
        models=models,
        enabled=sum(1 for m in models if m.enabled),
        day=day.overall,
    )
