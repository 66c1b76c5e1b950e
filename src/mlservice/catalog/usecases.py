"""The catalog's use cases: an administrator changes a model's price, availability or batching, and
the models a person can run now (the bot's menus).

Each owns its unit of work, the one commit point of the operation; the JSON API, the admin models
page and the bot check roles and only translate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlservice.catalog import service
from mlservice.wallet import alerts

if TYPE_CHECKING:
    from mlservice.catalog.tables import CatalogModel
    from mlservice.components import Components
    from mlservice.predictors.base import InputKind


async def update_model(
    components: Components,
    slug: str,
    *,
    price: int | None = None,
    enabled: bool | None = None,
    max_batch_size: int | None = None,
    max_wait_ms: int | None = None,
    max_queued_jobs: int | service.Keep | None = service.KEEP,
) -> CatalogModel:
    """Change what is given (``None``: unchanged) and return the model as committed.

    Jobs keep the price they were submitted at; workers take batching limits when they start. A
    batch size is checked against the model installed in this process (``batch_size_too_large``,
    ``model_not_installed``); an unknown slug is ``model_not_found``. ``max_queued_jobs``: None
    is the server's default; left out, the cap is unchanged. A new price or availability makes
    every wallet's next low-balance threshold unknown (see :mod:`mlservice.wallet.alerts`).
    """
    async with components.db.session(write=True) as session:
        model = await service.update_model(
            session,
            slug,
            price=price,
            enabled=enabled,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queued_jobs=max_queued_jobs,
            predictor=components.predictors.get(slug),
        )
        if price is not None or enabled is not None:
            # The cheapest price may have changed: a default low-balance threshold with it.
            await alerts.forget_triggers(session)
    components.catalog.forget(slug)  # submits here see it at once (elsewhere: within seconds)
    return model


async def runnable_models(components: Components, kind: InputKind | None = None) -> list[CatalogModel]:
    """Enabled models installed here, in catalog order; only those taking ``kind`` of input if given."""
    async with components.db.session() as session:
        models = await service.list_models(session)
    return [
        m
        for m in models
        if m.slug in components.predictors
        and (kind is None or components.predictors[m.slug].input_kind == kind)
    ]
