"""The retention sweeper: a background task of each process that runs workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from mlservice.db import Database
from mlservice.errors import ServiceUnavailable
from mlservice.observability.metrics import ServiceMetrics
from mlservice.retention import usecases
from mlservice.retention.policy import KINDS, RetentionPolicy
from mlservice.storage.base import Storage
from mlservice.types import utcnow

log = logging.getLogger(__name__)


class RetentionSweeper:
    """Every ``interval_s`` (0: never), removes what ``policy`` says has expired; counts it in
    ``mlservice_retention_removed_total{kind}`` and logs one line per sweep that removed something."""

    def __init__(
        self,
        db: Database,
        storage: Storage,
        policy: RetentionPolicy,
        metrics: ServiceMetrics,
        *,
        interval_s: float,
        stop_grace_s: float = 10.0,
    ) -> None:
        self.db = db
        self.storage = storage
        self.policy = policy
        self.metrics = metrics
        self.interval_s = interval_s
        self.stop_grace_s = stop_grace_s
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        for kind in KINDS:  # every series exists at zero before anything expires
            metrics.retention_removed.labels(kind)

    async def start(self) -> None:
        if self.interval_s > 0 and self._task is None:
            self._stopping.clear()
            self._task = asyncio.create_task(self._sweep_forever(), name="retention-sweeper")

    async def stop(self) -> None:
        """Let the batch in hand finish (its files deleted too), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.stop_grace_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def sweep_once(self, now: datetime | None = None) -> dict[str, int]:
        """One sweep as of ``now`` (default: the present); what it removed, by kind."""
        removed = await usecases.sweep(
            self.db,
            self.storage,
            self.policy,
            now=now or utcnow(),
            counted=self._count,
            stopping=self._stopping.is_set,
        )
        if any(removed.values()):
            log.info(
                "retention removed %s",
                ", ".join(f"{count} {kind}" for kind, count in removed.items() if count),
            )
        return removed

    def _count(self, kind: str, amount: int) -> None:
        self.metrics.retention_removed.labels(kind).inc(amount)

    async def _sweep_forever(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval_s)
                return  # stopping
            try:
                await self.sweep_once()
            except ServiceUnavailable:
                pass  # the database is away (logged once, by the database); the next sweep will do
            except Exception:
                log.exception("retention sweep failed")
