"""Publishing job ids after commit, and the relay that republishes what the broker never confirmed.

A job row commits first and its message is published afterwards, so a rollback publishes nothing.
The gap between the two is where a job could be lost: the process dies after the commit, or the
broker is down. With a durable broker every confirmed publish is therefore recorded
(``jobs.published_at``), in small batched updates off the request path, and workers periodically
republish queued jobs that have stayed unconfirmed for a while. A job published twice is harmless:
only one delivery can claim it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit
from mlservice.jobs import repository
from mlservice.queue.base import JobQueue
from mlservice.types import utcnow

log = logging.getLogger(__name__)

# A publish that the broker has not confirmed by then is given up; the relay retries it.
PUBLISH_TIMEOUT_S = 5.0
FLUSH_INTERVAL_S = 0.1
RELAY_BATCH = 500


class JobPublisher:
    """Publishes job ids to the queue and records the broker's confirmations in batches."""

    def __init__(self, db: Database, queue: JobQueue) -> None:
        self.db = db
        self.queue = queue
        # job id -> the attempt count at publish: a mark never lands on a later incarnation.
        self._confirmed: dict[uuid.UUID, int] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.queue.durable and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_forever(), name="publish-marker")

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self._flush()

    async def publish(self, model_slug: str, job_id: uuid.UUID, attempts: int = 0) -> None:
        """Publish now; raises if the broker does not confirm in time (the relay retries later)."""
        await asyncio.wait_for(self.queue.publish(model_slug, job_id), PUBLISH_TIMEOUT_S)
        if self.queue.durable:
            self._confirmed[job_id] = attempts
            self._wake.set()

    def publish_after_commit(
        self, session: AsyncSession, model_slug: str, job_id: uuid.UUID, attempts: int = 0
    ) -> None:
        async def publish() -> None:
            await self.publish(model_slug, job_id, attempts)

        after_commit(session, publish)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception:
                # Unrecorded confirmations only cost a duplicate publish by the relay.
                log.warning("could not record published jobs", exc_info=True)
            await asyncio.sleep(FLUSH_INTERVAL_S)

    async def _flush(self) -> None:
        if not self._confirmed:
            return
        confirmed, self._confirmed = self._confirmed, {}
        now = utcnow()
        by_attempt: dict[int, list[uuid.UUID]] = {}
        for job_id, attempts in confirmed.items():
            by_attempt.setdefault(attempts, []).append(job_id)
        async with self.db.session(write=True) as session:
            for attempts, ids in by_attempt.items():
                await repository.mark_published(session, ids, attempts, now)

    async def relay(self, older_than_s: float) -> int:
        """Republish queued jobs unconfirmed for ``older_than_s``; returns how many were published."""
        if not self.queue.durable:
            return 0
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        async with self.db.session() as session:
            rows = await repository.unconfirmed(session, cutoff, RELAY_BATCH)
        published = 0
        for job_id, slug, attempts in rows:
            try:
                await self.publish(slug, job_id, attempts)
            except Exception as exc:
                log.warning("relay could not publish job %s (%r); will retry", job_id, exc)
                break
            published += 1
        if published:
            await self._flush()
            log.warning("relayed %d queued jobs whose publish was never confirmed", published)
        return published
