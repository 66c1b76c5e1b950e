"""The signed-in user's pages."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from mlservice.catalog import service as catalog
from mlservice.deps import SessionDep
from mlservice.web.deps import PageUser, PageWallet
from mlservice.web.render import page

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, user: PageUser, wallet: PageWallet, session: SessionDep) -> Response:
    models = await catalog.list_models(session)
    return page(request, "home.html", user=user, wallet=wallet, nav="home", models=models)
