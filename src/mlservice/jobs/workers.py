"""Workers: consume a queue (in-process or RabbitMQ), batch per model, commit, then ack; sweep leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mlservice.db import Database
from mlservice.jobs.executor import JobExecutor, queued_jobs, sweep
from mlservice.queue.base import Delivery, JobQueue

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 15.0


class JobWorkers:
    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        executor: JobExecutor,
        *,
        concurrency: int,
        max_attempts: int,
        preload: bool,
        resume_queued: bool = True,
    ) -> None:
        self.db = db
        self.queue = queue
        self.executor = executor
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.preload = preload
        self.resume_queued = resume_queued
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.resume_queued:
            # An in-process queue starts empty: republish what the database says is waiting.
            async with self.db.session() as session:
                waiting = await queued_jobs(session)
            for job_id, slug in waiting:
                await self.queue.publish(slug, job_id)
            if waiting:
                log.info("requeued %d waiting jobs", len(waiting))
        consume = getattr(self.queue, "consume", None)
        for slug, cls in self.executor.pool.classes.items():
            if consume is not None:
                await consume(slug, prefetch=cls.max_batch_size * self.concurrency)
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

    async def stop(self, grace_s: float = 30.0) -> None:
        """Stop taking jobs; let batches already running finish (their results commit and ack)."""
        stop_consuming = getattr(self.queue, "stop_consuming", None)
        if stop_consuming is not None:
            await stop_consuming()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._in_flight:
            _, unfinished = await asyncio.wait(self._in_flight, timeout=grace_s)
            # Whatever did not finish stays `running`: its message is redelivered when the
            # connection closes, and the lease sweeper retries the job.
            for task in unfinished:
                task.cancel()

    async def _preload(self, slug: str) -> None:
        try:
            await self.executor.pool.get(slug)
        except Exception:
            log.exception("preloading %s failed; jobs for it will fail until it loads", slug)

    async def _consume(self, slug: str, max_batch: int, max_wait_ms: int) -> None:
        while True:
            deliveries = await self.queue.next_batch(slug, max_batch, max_wait_ms / 1000)
            # Shielded: stopping the worker must not cut a batch off between claim and commit.
            task = asyncio.create_task(self._run(slug, deliveries))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            await asyncio.shield(task)

    async def _run(self, slug: str, deliveries: list[Delivery]) -> None:
        try:
            await self.executor.run_batch(slug, [d.job_id for d in deliveries])
        except Exception:
            # Claimed jobs stay `running` until the sweeper retries them; unclaimed ones go back.
            log.exception("batch of %s failed: %s", slug, [d.job_id for d in deliveries])
            await _settle(deliveries, requeue=True)
            return
        # Only now is every outcome committed (or the job was not ours to run): drop the messages.
        await _settle(deliveries, requeue=False)

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


async def _settle(deliveries: list[Delivery], *, requeue: bool) -> None:
    for delivery in deliveries:
        try:
            await (delivery.requeue() if requeue else delivery.ack())
        except Exception:
            # The broker redelivers what it never heard back about; the guarded claim makes that safe.
            log.warning(
                "could not %s job %s", "requeue" if requeue else "ack", delivery.job_id, exc_info=True
            )
