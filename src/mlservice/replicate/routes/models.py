"""``/v1/models``: the models you can run, with their price per run, and their one version each
(the installed one)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from mlservice.catalog.service import get_runnable_model, list_models
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.replicate import versions
from mlservice.replicate.errors import VersionNotFound
from mlservice.replicate.pages import PAGE_SIZE, offset_of, page_url
from mlservice.replicate.problems import ReplicateRoute, problems
from mlservice.replicate.routes.dependencies import ApiUser, Limit, base_url
from mlservice.replicate.schemas import Model, ModelPage, ModelVersion, VersionPage

router = APIRouter(tags=["replicate"], route_class=ReplicateRoute, responses=problems(401, 422))


@router.get("/models", response_model=ModelPage, responses=problems(400))
async def list_models_page(
    request: Request,
    user: ApiUser,
    session: SessionDep,
    components: ComponentsDep,
    cursor: str | None = None,
    limit: Limit = None,
) -> ModelPage:
    """The models you can run, with their price per run in credits."""
    size = limit or PAGE_SIZE
    offset = offset_of(cursor)
    rows = await list_models(session)
    counts = await versions.run_counts(session, user.id)
    base = base_url(request)
    page = rows[offset : offset + size]
    previous = str(max(offset - size, 0)) if offset else None
    following = str(offset + size) if offset + size < len(rows) else None
    return ModelPage(
        previous=page_url(base, "/v1/models", previous, limit),
        next=page_url(base, "/v1/models", following, limit),
        results=[versions.model_of(m, components.predictors, base, counts.get(m.slug, 0)) for m in page],
    )


@router.get("/models/{owner}/{name}", response_model=Model, responses=problems(404, 409))
async def get_model(
    request: Request, owner: str, name: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Model:
    row = await get_runnable_model(session, versions.slug_of_owner_name(owner, name))
    counts = await versions.run_counts(session, user.id)
    return versions.model_of(row, components.predictors, base_url(request), counts.get(row.slug, 0))


@router.get("/models/{owner}/{name}/versions", response_model=VersionPage, responses=problems(404, 409))
async def list_versions(
    owner: str, name: str, _: ApiUser, session: SessionDep, components: ComponentsDep
) -> VersionPage:
    """A model here has one version, the installed one."""
    row = await get_runnable_model(session, versions.slug_of_owner_name(owner, name))
    cls = versions.installed(row.slug, components.predictors)
    return VersionPage(previous=None, next=None, results=[versions.model_version(cls, row)])


@router.get(
    "/models/{owner}/{name}/versions/{version_id}", response_model=ModelVersion, responses=problems(404, 409)
)
async def get_version(
    owner: str, name: str, version_id: str, _: ApiUser, session: SessionDep, components: ComponentsDep
) -> ModelVersion:
    row = await get_runnable_model(session, versions.slug_of_owner_name(owner, name))
    cls = versions.installed(row.slug, components.predictors)
    version = versions.model_version(cls, row)
    if version.id != version_id:
        raise VersionNotFound(f"The model {owner}/{name} has no version {version_id!r}.")
    return version
