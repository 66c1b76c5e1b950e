"""Workers: consume a queue (in-process or RabbitMQ), batch per model, commit, then ack; sweep leases."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial

from mlservice.catalog.service import batch_limits
from mlservice.db import Database
from mlservice.errors import ServiceUnavailable
from mlservice.jobs.attempts import Disposition
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.repository import count_queued_of, queued_jobs
from mlservice.jobs.service import end_overdue
from mlservice.jobs.settle import sweep
from mlservice.queue.base import Delivery, JobQueue
from mlservice.wallet import grants
from mlservice.wallet import service as wallet

log = logging.getLogger(__name__)
# How long a worker waits before handing back a batch it could not run for a database outage.
OUTAGE_PAUSE_S = 1.0


class JobWorkers:
    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        executor: JobExecutor,
        publisher: JobPublisher,
        *,
        concurrency: int,
        max_attempts: int,
        preload: bool,
        batching: bool = True,
        resume_queued: bool = True,
        sweep_interval_s: float = 5.0,
        relay_after_s: float = 10.0,
    ) -> None:
        self.db = db
        self.queue = queue
        self.executor = executor
        self.publisher = publisher
        self.sweep_interval_s = sweep_interval_s
        self.relay_after_s = relay_after_s
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.preload = preload
        self.batching = batching
        self.resume_queued = resume_queued
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        # Messages of jobs waiting out their retry backoff before they are given back.
        self._backing_off: dict[asyncio.Task[None], Delivery] = {}

    async def start(self) -> None:
        if self.resume_queued:
            # An in-process queue starts empty: republish what the database says is waiting.
            async with self.db.session() as session:
                waiting = await queued_jobs(session)
            for job_id, slug in waiting:
                await self.publisher.publish(slug, job_id)
            if waiting:
                log.info("requeued %d waiting jobs", len(waiting))
        async with self.db.session() as session:
            # As admins set them in the catalog; a model without a row yet keeps its predictor's.
            limits = await batch_limits(session)
        consume = getattr(self.queue, "consume", None)
        for slug, cls in self.executor.pool.classes.items():
            size, wait = limits.get(slug, (cls.max_batch_size, cls.max_wait_ms))
            batch_size = min(size, cls.max_batch_size) if self.batching else 1
            max_wait_ms = cls.max_wait_ms if wait is None else wait
            if consume is not None:
                # Enough unacknowledged messages for every consumer's next batch to be gathering
                # while the current one runs.
                await consume(slug, prefetch=batch_size * (self.concurrency + 1))
            for n in range(self.concurrency):
                self._tasks.append(
                    asyncio.create_task(
                        self._consume(slug, batch_size, max_wait_ms), name=f"worker-{slug}-{n}"
                    )
                )
            if self.preload:
                self._tasks.append(asyncio.create_task(self._preload(slug), name=f"preload-{slug}"))
        self._tasks.append(asyncio.create_task(self._sweep_forever(), name="lease-sweeper"))
        self._tasks.append(asyncio.create_task(self._renew_forever(), name="lease-renewer"))

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
        # Retries waiting out their backoff go back to the queue now rather than when the
        # connection closes: another worker may take them at once.
        for task, delivery in list(self._backing_off.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _settle(delivery, Disposition.retry)
        self._backing_off.clear()
        if self._in_flight:
            _, unfinished = await asyncio.wait(self._in_flight, timeout=grace_s)
            # Whatever did not finish stays `running`: its message is redelivered when the
            # connection closes, and the lease sweeper retries the job.
            for task in unfinished:
                task.cancel()
        await self.executor.live.stop()

    async def _preload(self, slug: str) -> None:
        try:
            await self.executor.pool.get(slug)
        except Exception:
            log.exception("preloading %s failed; jobs for it will fail until it loads", slug)

    async def _consume(self, slug: str, max_batch: int, max_wait_ms: int) -> None:
        more_queued = partial(self._more_queued, slug)
        while True:
            deliveries = await self.queue.next_batch(slug, max_batch, max_wait_ms / 1000, more_queued)
            # Shielded: stopping the worker must not cut a batch off between claim and commit.
            task = asyncio.create_task(self._run(slug, deliveries))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
            await asyncio.shield(task)

    async def _more_queued(self, slug: str, gathered: int) -> bool:
        """Whether jobs of ``slug`` beyond the ``gathered`` ones in hand are queued: only then is
        a batch worth waiting for (those may still be on their way from the broker)."""
        try:
            async with self.db.session() as session:
                return await count_queued_of(session, slug, at_most=gathered + 1) > gathered
        except Exception:
            # The jobs in hand must not be dropped for it: wait for the batch as if more came.
            log.warning("could not count the queued jobs of %s", slug, exc_info=True)
            return True

    async def _run(self, slug: str, deliveries: list[Delivery]) -> None:
        try:
            dispositions = await self.executor.run_batch(slug, [d.job_id for d in deliveries])
        except ServiceUnavailable:
            # The database is away (logged once, by the database): the jobs go back to the queue,
            # after a pause so that a worker does not spin through its deliveries meanwhile.
            await asyncio.sleep(OUTAGE_PAUSE_S)
            dispositions = dict.fromkeys((d.job_id for d in deliveries), Disposition.retry)
        except Exception:
            # Claimed jobs stay `running` until the sweeper retries them; unclaimed ones go back.
            log.exception("batch of %s failed: %s", slug, [d.job_id for d in deliveries])
            dispositions = dict.fromkeys((d.job_id for d in deliveries), Disposition.retry)
        # Only now is every outcome committed (or the job was not ours to run): settle the messages.
        for delivery in deliveries:
            disposition = dispositions.get(delivery.job_id, Disposition.ack)
            delay = self.executor.retry_delays.pop(delivery.job_id, 0.0)
            if disposition is Disposition.retry and delay > 0:
                self._back_off(delivery, delay)
            else:
                await _settle(delivery, disposition)

    def _back_off(self, delivery: Delivery, delay_s: float) -> None:
        """Give a retried job's message back after ``delay_s``, without holding up the consumer.

        The job is ``queued`` in the database meanwhile; only this message carries it, and a
        process that dies meanwhile leaves it unacknowledged, so the broker delivers it again.
        """

        async def later() -> None:
            await asyncio.sleep(delay_s)
            await _settle(delivery, Disposition.retry)

        task = asyncio.create_task(later(), name=f"retry-{delivery.job_id}")
        self._backing_off[task] = delivery
        task.add_done_callback(lambda done: self._backing_off.pop(done, None))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                # Relay first: the jobs the sweep requeues are published by the sweep itself.
                await self.publisher.relay(self.relay_after_s)
                async with self.db.session(write=True) as session:
                    count = await sweep(session, self.publisher, max_attempts=self.max_attempts)
                if count:
                    log.warning("swept %d jobs whose lease expired", count)
                async with self.db.session(write=True) as session:
                    ended = await end_overdue(session, metrics=self.executor.telemetry.metrics)
                if ended:
                    log.info("ended %d jobs past their Cancel-After deadline", ended)
                async with self.db.session(write=True) as session:
                    removed = await wallet.expire_due(session, grants.now())
                if removed:
                    log.info("removed %d credits of expired grants", removed)
            except ServiceUnavailable:
                pass  # the database is away (logged once, by the database); the next sweep will do
            except Exception:
                log.exception("lease sweep failed")

    async def _renew_forever(self) -> None:
        interval = self.executor.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.executor.renew_leases()
            except ServiceUnavailable:
                pass  # logged once, by the database; a lease outlives two missed renewals
            except Exception:
                log.warning("could not renew job leases", exc_info=True)


async def _settle(delivery: Delivery, disposition: Disposition) -> None:
    try:
        if disposition is Disposition.retry:
            await delivery.requeue()
        elif disposition is Disposition.dead_letter:
            await delivery.dead_letter()
        else:
            await delivery.ack()
    except Exception:
        # The broker redelivers what it never heard back about; the guarded claim makes that safe.
        log.warning("could not %s job %s", disposition.value, delivery.job_id, exc_info=True)
