from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import cast

from sqlalchemy import Table, bindparam, case, func, select
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


class ModelNotInstalled(AppError):
    status_code = 409
    code = "model_not_installed"


class BatchSizeTooLarge(AppError):
    status_code = 422
    code = "batch_size_too_large"


async def sync_catalog(session: AsyncSession, predictors: Mapping[str, type[Predictor]]) -> None:
    """Add a catalog row for every installed predictor; keep prices and switches admins set."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    for cls in predictors.values():
        descriptive = {
            "title": cls.title,
            "task": cls.task,
            "description": cls.description,
            "input_kind": cls.input_kind,
        }
        stmt = insert(CatalogModel).values(
            slug=cls.slug,
            price=cls.default_price,
            enabled=True,
            max_batch_size=cls.max_batch_size,
            max_wait_ms=cls.max_wait_ms,
            **descriptive,
        )
        # Batching limits are the admins' once seeded; a batch size is only lowered when the
        # installed predictor can no longer take it.
        batching = {
            "max_batch_size": case(
                (CatalogModel.max_batch_size > stmt.excluded.max_batch_size, stmt.excluded.max_batch_size),
                else_=CatalogModel.max_batch_size,
            ),
            "max_wait_ms": func.coalesce(CatalogModel.max_wait_ms, stmt.excluded.max_wait_ms),
        }
        # Several API processes may start at once: racing inserts must not fail.
        await session.execute(
            stmt.on_conflict_do_update(index_elements=["slug"], set_={**descriptive, **batching})
        )


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


_models = cast(Table, CatalogModel.__table__)
# Built once: every submit reads its model with it.
_MODEL_ROW = select(_models).where(_models.c.slug == bindparam("b_slug"))


async def read_model(session: AsyncSession, slug: str) -> CatalogModel | None:
    """The model's row as it is now, enabled or not: a ``CatalogModel`` of no session (one Core
    SELECT; nothing is changed through it)."""
    row = (await session.execute(_MODEL_ROW, {"b_slug": slug})).first()
    return None if row is None else CatalogModel(**row._mapping)


async def get_runnable_model(session: AsyncSession, slug: str) -> CatalogModel:
    """The model if it exists and is enabled, as its row is now (see :func:`read_model`)."""
    model = await read_model(session, slug)
    if model is None:
        raise ModelNotFound(f"There is no model {slug!r}.")
    if not model.enabled:
        raise ModelDisabled(f"The model {slug!r} is disabled.")
    return model


class Keep(enum.Enum):
    """An argument meaning "as it is", where None means something else (a cap back to its default)."""

    KEEP = "keep"


KEEP = Keep.KEEP


async def update_model(
    session: AsyncSession,
    slug: str,
    *,
    price: int | None,
    enabled: bool | None,
    max_batch_size: int | None = None,
    max_wait_ms: int | None = None,
    max_queued_jobs: int | Keep | None = KEEP,
    predictor: type[Predictor] | None = None,
) -> CatalogModel:
    """Change price, availability or batching. Jobs keep the price they were submitted at
    (``job.cost``); workers take batching limits when they start.

    ``predictor`` is the installed class: a batch size is checked against what it can take.
    """
    model = await session.get(CatalogModel, slug, with_for_update=True)
    if model is None:
        raise ModelNotFound(f"There is no model {slug!r}.")
    if max_batch_size is not None:
        if predictor is None:
            raise ModelNotInstalled(
                f"The model {slug!r} is not installed on this server: its batch limit is unknown."
            )
        if max_batch_size > predictor.max_batch_size:
            raise BatchSizeTooLarge(
                f"The model {slug!r} takes at most {predictor.max_batch_size} inputs per batch.",
                limit=predictor.max_batch_size,
            )
        model.max_batch_size = max_batch_size
    if max_wait_ms is not None:
        model.max_wait_ms = max_wait_ms
    if not isinstance(max_queued_jobs, Keep):
        model.max_queued_jobs = max_queued_jobs
    if price is not None:
        model.price = price
    if enabled is not None:
        model.enabled = enabled
    await session.flush()
    return model


async def batch_limits(session: AsyncSession) -> dict[str, tuple[int, int | None]]:
    """slug -> (max_batch_size, max_wait_ms) as the catalog holds them."""
    rows = await session.execute(
        select(CatalogModel.slug, CatalogModel.max_batch_size, CatalogModel.max_wait_ms)
    )
    return {slug: (size, wait) for slug, size, wait in rows}
