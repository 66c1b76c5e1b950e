from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.catalog.tables import CatalogModel
from mlservice.errors import AppError, NotFound
from mlservice.predictors.base import Predictor


class ModelNotFound(NotFound):
    code = "model_not_found"


class ModelDisabled(AppError):
    status_code = 409
    code = "model_disabled"


async def sync_catalog(session: AsyncSession, predictors: Mapping[str, type[Predictor]]) -> None:
    """Add a catalog row for every installed predictor; keep prices and switches admins set."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    for cls in predictors.values():
        descriptive = {
            "title": cls.title,
            "task": cls.task,
            "description": cls.description,
            "input_kind": cls.input_kind,
            "max_batch_size": cls.max_batch_size,
        }
        stmt = insert(CatalogModel).values(
            slug=cls.slug, price=cls.default_price, enabled=True, **descriptive
        )
        # Several API processes may start at once: racing inserts must not fail.
        await session.execute(stmt.on_conflict_do_update(index_elements=["slug"], set_=descriptive))


async def list_models(session: AsyncSession, *, include_disabled: bool = False) -> list[CatalogModel]:
    stmt = select(CatalogModel).order_by(CatalogModel.slug)
    if not include_disabled:
        stmt = stmt.where(CatalogModel.enabled.is_(True))
    return list(await session.scalars(stmt))


async def get_model(session: AsyncSession, slug: str) -> CatalogModel:
    model = await session.get(CatalogModel, slug)
    if model is None:
        raise ModelNotFound(f"There is no model {slug!r}.")
    return model


async def get_runnable_model(session: AsyncSession, slug: str) -> CatalogModel:
    model = await get_model(session, slug)
    if not model.enabled:
        raise ModelDisabled(f"The model {slug!r} is disabled.")
    return model


async def update_model(
    session: AsyncSession, slug: str, *, price: int | None, enabled: bool | None
) -> CatalogModel:
    """Change price or availability. Jobs keep the price they were submitted at (``job.cost``)."""
    model = await session.get(CatalogModel, slug, with_for_update=True)
    if model is None:
        raise ModelNotFound(f"There is no model {slug!r}.")
    if price is not None:
        model.price = price
    if enabled is not None:
        model.enabled = enabled
    await session.flush()
    return model
