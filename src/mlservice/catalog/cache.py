"""The catalog as submits read it: each model's row kept for a few seconds per process.

Every submit needs its model's price and state; reading the row each time was one of a submit's
three round trips. A change made through this process (``catalog.usecases.update_model``) is
forgotten here at once; one made through another process applies within ``ttl_seconds``
(``MLSERVICE_CATALOG_CACHE_SECONDS``). A job is charged the price it was admitted at, as always.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cachetools import TTLCache

from mlservice.catalog.service import ModelDisabled, ModelNotFound, read_model

if TYPE_CHECKING:
    from mlservice.catalog.tables import CatalogModel
    from mlservice.db import Database


class CatalogCache:
    def __init__(self, db: Database, ttl_seconds: float) -> None:
        self._db = db
        # A catalog has tens of models; the bound keeps made-up slugs from filling memory.
        self._rows: TTLCache[str, CatalogModel | None] = TTLCache(1024, max(ttl_seconds, 1e-9))

    async def runnable(self, slug: str) -> CatalogModel:
        """The model if it exists and is enabled: a ``CatalogModel`` of no session, shared by the
        requests that read it meanwhile (never changed through it)."""
        try:
            model = self._rows[slug]
        except KeyError:
            async with self._db.session() as session:
                model = await read_model(session, slug)
            self._rows[slug] = model
        if model is None:
            raise ModelNotFound(f"There is no model {slug!r}.")
        if not model.enabled:
            raise ModelDisabled(f"The model {slug!r} is disabled.")
        return model

    def forget(self, slug: str) -> None:
        self._rows.pop(slug, None)
