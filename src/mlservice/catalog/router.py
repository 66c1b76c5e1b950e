from __future__ import annotations

from fastapi import APIRouter

from mlservice.catalog import service, usecases
from mlservice.catalog.schemas import AdminModelRead, ModelRead, ModelUpdate
from mlservice.catalog.service import KEEP
from mlservice.catalog.tables import CatalogModel
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import error_responses
from mlservice.users.auth import AdminUser

router = APIRouter(tags=["models"])


def _read(model: CatalogModel, components: ComponentsDep) -> ModelRead:
    predictor = components.predictors.get(model.slug)
    schema = predictor.params_model.model_json_schema() if predictor else {}
    return ModelRead.model_validate(model).model_copy(update={"params_schema": schema})


@router.get("/models", response_model=list[ModelRead])
async def list_models(session: SessionDep, components: ComponentsDep) -> list[ModelRead]:
    """The models you can run, with their price per run in credits."""
    return [_read(m, components) for m in await service.list_models(session)]


@router.get("/models/{slug}", response_model=ModelRead, responses=error_responses(404, 409))
async def get_model(slug: str, session: SessionDep, components: ComponentsDep) -> ModelRead:
    return _read(await service.get_runnable_model(session, slug), components)


def _admin_read(model: CatalogModel, components: ComponentsDep) -> AdminModelRead:
    predictor = components.predictors.get(model.slug)
    return AdminModelRead(
        **_read(model, components).model_dump(),
        max_batch_size=model.max_batch_size,
        max_wait_ms=model.max_wait_ms,
        batch_size_limit=predictor.max_batch_size if predictor else None,
        max_queued_jobs=model.max_queued_jobs,
        queue_cap=components.queue_caps.cap_of(model),
    )


@router.get(
    "/admin/models",
    response_model=list[AdminModelRead],
    tags=["admin"],
    responses=error_responses(401, 403),
)
async def admin_list_models(
    _: AdminUser, session: SessionDep, components: ComponentsDep
) -> list[AdminModelRead]:
    return [_admin_read(m, components) for m in await service.list_models(session, include_disabled=True)]


@router.patch(
    "/admin/models/{slug}",
    response_model=AdminModelRead,
    tags=["admin"],
    responses=error_responses(400, 401, 403, 404, 409),
)
async def admin_update_model(
    slug: str, body: ModelUpdate, _: AdminUser, components: ComponentsDep
) -> AdminModelRead:
    """Change price, availability, batching limits (which workers apply when they start) or the
    model's queue cap."""
    model = await usecases.update_model(
        components,
        slug,
        price=body.price,
        enabled=body.enabled,
        max_batch_size=body.max_batch_size,
        max_wait_ms=body.max_wait_ms,
        # null is a value here (back to the default); left out, the cap stays as it is
        max_queued_jobs=body.max_queued_jobs if "max_queued_jobs" in body.model_fields_set else KEEP,
    )
    return _admin_read(model, components)
