"""A model's queue has a cap: a submit that would go past it is refused (503 ``model_queue_full``,
with Retry-After) before anything is held, written or stored.

The cap is the catalog's ``max_queued_jobs`` for the model, or ``MLSERVICE_MAX_QUEUED_JOBS_PER_MODEL``
where the catalog leaves it unset; 0 is no cap. It guards the service (workers that cannot keep up,
a queue that would take hours to drain), not money, so it reads a count this process refreshes at
most every ``ttl_seconds`` (one grouped COUNT for every model) instead of counting on each submit: a
queue may pass its cap by what this process admits within that time. The per-user cap on unfinished
jobs, which keeps one user from filling a queue, is exact enough to sit in the submit's own guarded
statement (see :mod:`mlservice.jobs.admission`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mlservice.jobs import repository
from mlservice.jobs.errors import ModelQueueFull

if TYPE_CHECKING:
    from mlservice.catalog.tables import CatalogModel
    from mlservice.db import Database


class QueueCaps:
    def __init__(self, db: Database, *, default_cap: int, ttl_seconds: float) -> None:
        self._db = db
        self._default_cap = default_cap
        self._ttl = ttl_seconds
        self._queued: dict[str, int] = {}
        self._read_at = float("-inf")
        self._reading: asyncio.Task[None] | None = None

    def cap_of(self, model: CatalogModel) -> int:
        return self._default_cap if model.max_queued_jobs is None else model.max_queued_jobs

    async def check(self, model: CatalogModel) -> None:
        """Refuse a submit to ``model`` while its queue is at its cap."""
        cap = self.cap_of(model)
        if cap <= 0:
            return
        if (await self.queued()).get(model.slug, 0) >= cap:
            raise ModelQueueFull(
                f"The model {model.slug!r} has {cap} jobs waiting, as many as it queues; "
                "please submit again shortly.",
                limit=cap,
            )

    async def queued(self) -> dict[str, int]:
        """Queued jobs per model, as read at most ``ttl_seconds`` ago; concurrent callers share one
        read."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._read_at >= self._ttl:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read())
            reading = self._reading
            await asyncio.shield(reading)
        return self._queued

    def admitted(self, slug: str) -> None:
        """Count a job this process just queued, until the next read counts it anyway: what a
        queue can pass its cap by is then what the other processes admit meanwhile."""
        self._queued[slug] = self._queued.get(slug, 0) + 1

    def forget(self) -> None:
        """Read again at the next check (a cap was changed here)."""
        self._read_at = float("-inf")

    async def _read(self) -> None:
        try:
            async with self._db.session() as session:
                self._queued = await repository.count_queued(session)
            self._read_at = asyncio.get_running_loop().time()
        finally:
            self._reading = None
