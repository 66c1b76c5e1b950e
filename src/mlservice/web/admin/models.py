"""The admin models page: every model in the catalog with its edit form (price, enabled, batching,
queue cap)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.catalog import service as catalog
from mlservice.catalog import usecases as catalog_usecases
from mlservice.catalog.schemas import MAX_WAIT_MS, ModelUpdate
from mlservice.catalog.tables import CatalogModel
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import AppError
from mlservice.users.principals import Principal
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import Wallet
from mlservice.web.admin.formatting import admin_page
from mlservice.web.admin.inputs import CsrfField, TextField
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageAdmin, PageWallet
from mlservice.web.render import redirect

if TYPE_CHECKING:
    from mlservice.components import Components

router = APIRouter(prefix="/admin", include_in_schema=False)


@dataclass
class ModelForm:
    """The edit form of one model: what it shows (the row, or what was typed) and what was wrong."""

    price: str
    enabled: bool
    max_batch_size: str
    max_wait_ms: str
    # Empty: the server's default cap.
    max_queued_jobs: str
    errors: dict[str, str]

    @classmethod
    def of(cls, model: CatalogModel) -> ModelForm:
        wait = "" if model.max_wait_ms is None else str(model.max_wait_ms)
        queued = "" if model.max_queued_jobs is None else str(model.max_queued_jobs)
        return cls(str(model.price), model.enabled, str(model.max_batch_size), wait, queued, {})


_MODEL_FIELDS = {
    "price": "Price",
    "max_batch_size": "Max batch size",
    "max_wait_ms": "Max wait",
    "max_queued_jobs": "Queue cap",
}


def _model_changes(model: CatalogModel, form: ModelForm) -> dict[str, Any]:
    """What the form changes, checked by the API's own schema; raises with the problems by field."""
    changes: dict[str, Any] = {}
    for name, label in _MODEL_FIELDS.items():
        typed = getattr(form, name).strip()
        if not typed:
            if name == "max_queued_jobs":
                if model.max_queued_jobs is not None:
                    changes[name] = None  # back to the server's default
                continue
            if name == "max_wait_ms" and model.max_wait_ms is None:
                continue
            form.errors[name] = f"{label}: enter a whole number."
            continue
        try:
            value = int(typed)
        except ValueError:
            form.errors[name] = f"{label}: enter a whole number, not {typed!r}."
            continue
        if value != getattr(model, name):
            changes[name] = value
    if form.enabled != model.enabled:
        changes["enabled"] = form.enabled
    if form.errors or not changes:
        return changes
    try:
        ModelUpdate(**changes)
    except ValidationError as exc:
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else "form"
            message = str(error["msg"]).replace("Input should be", "must be")
            form.errors[name] = f"{_MODEL_FIELDS.get(name, 'The form')}: {message}."
    return changes


async def _models_page(
    request: Request,
    admin: Principal,
    wallet: Wallet | None,
    session: AsyncSession,
    components: Components,
    forms: Mapping[str, ModelForm] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    models = await catalog.list_models(session, include_disabled=True)
    shown = {m.slug: (forms or {}).get(m.slug) or ModelForm.of(m) for m in models}
    limits = {
        m.slug: cls.max_batch_size if (cls := components.predictors.get(m.slug)) else None for m in models
    }
    return admin_page(
        request,
        "models.html",
        admin=admin,
        wallet=wallet,
        section="models",
        models=models,
        forms=shown,
        limits=limits,
        max_wait=MAX_WAIT_MS,
        default_queue_cap=components.settings.max_queued_jobs_per_model,
        status_code=status_code,
    )


@router.get("/models", response_class=HTMLResponse)
async def models(
    request: Request, admin: PageAdmin, wallet: PageWallet, session: SessionDep, components: ComponentsDep
) -> Response:
    return await _models_page(request, admin, wallet, session, components)


@router.post("/models/{slug}", response_class=HTMLResponse)
async def update_model(
    request: Request,
    slug: str,
    admin: PageAdmin,
    session: SessionDep,
    components: ComponentsDep,
    price: TextField = "",
    enabled: TextField = "",
    max_batch_size: TextField = "",
    max_wait_ms: TextField = "",
    max_queued_jobs: TextField = "",
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    model = await catalog.get_model(session, slug)
    form = ModelForm(price, bool(enabled), max_batch_size, max_wait_ms, max_queued_jobs, {})
    changes = _model_changes(model, form)
    if not form.errors:
        if not changes:
            return redirect(f"/admin/models#model-{slug}", notice=f"Nothing to change for {model.title}.")
        # No read connection held while the use case waits for the writer; a page shown after a
        # refusal reads afresh.
        await session.close()
        try:
            await catalog_usecases.update_model(
                components,
                slug,
                price=changes.get("price"),
                enabled=changes.get("enabled"),
                max_batch_size=changes.get("max_batch_size"),
                max_wait_ms=changes.get("max_wait_ms"),
                max_queued_jobs=changes.get("max_queued_jobs", catalog.KEEP),
            )
        except (catalog.BatchSizeTooLarge, catalog.ModelNotInstalled) as exc:
            form.errors["max_batch_size"] = exc.message
        except AppError as exc:
            form.errors["form"] = exc.message
    if form.errors:
        wallet = await wallet_service.get_wallet(session, admin.id)
        return await _models_page(request, admin, wallet, session, components, {slug: form}, 422)
    summary = ", ".join(_said(name, value) for name, value in changes.items())
    return redirect(f"/admin/models#model-{slug}", notice=f"Saved {model.title}: {summary}.")


def _said(name: str, value: Any) -> str:
    if name == "price":
        return f"price {value:,} credits"
    if name == "enabled":
        return "enabled" if value else "disabled"
    if name == "max_batch_size":
        return f"max batch size {value}"
    if name == "max_queued_jobs":
        if value is None:
            return "queue cap: the default"
        return f"queue cap {value:,}" if value else "no queue cap"
    return f"max wait {value} ms"
