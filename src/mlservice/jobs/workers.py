"""In-process workers of the embedded default: consume the queue, batch per model, sweep leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mlservice.db import Database
from mlservice.jobs.executor import JobExecutor, queued_jobs, sweep
from mlservice.queue.base import JobQueue

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 15.0


class InProcessWorkers:
    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        executor: JobExecutor,
        *,
        concurrency: int,
        max_attempts: int,
        preload: bool,
    ) -> None:
        self.db = db
        self.queue = queue
        self.executor = executor
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.preload = preload
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        # The in-process queue starts empty: republish what the database says is waiting.
        async with self.db.session() as session:
            waiting = await queued_jobs(session)
        for job_id, slug in waiting:
            await self.queue.publish(slug, job_id)
        if waiting:
            log.info("requeued %d waiting jobs", len(waiting))
        for slug, cls in self.executor.pool.classes.items():
            for n in range(self.concurrency):
                self._tasks.append(
                    asyncio.create_task(
                        self._consume(slug, cls.max_batch_size, cls.max_wait_ms), name=f"worker-{slug}-{n}"
                    )
                )
            if self.preload:
                self._tasks.append(asyncio.create_task(self._preload(slug), name=f"preload-{slug}"))
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="lease-sweeper"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _preload(self, slug: str) -> None:
        try:
            await self.executor.pool.get(slug)
        except Exception:
            log.exception("preloading %s failed; jobs for it will fail until it loads", slug)

    async def _consume(self, slug: str, max_batch: int, max_wait_ms: int) -> None:
        while True:
            job_ids = await self.queue.next_batch(slug, max_batch, max_wait_ms / 1000)
            try:
                await self.executor.run_batch(slug, job_ids)
            except Exception:
                # Jobs stay `running` and the sweeper retries them when their lease runs out.
                log.exception("batch of %s failed: %s", slug, job_ids)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            try:
                async with self.db.session(write=True) as session:
                    count = await sweep(session, self.queue, max_attempts=self.max_attempts)
                if count:
                    log.warning("swept %d jobs whose lease expired", count)
            except Exception:
                log.exception("lease sweep failed")
