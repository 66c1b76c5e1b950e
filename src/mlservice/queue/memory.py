from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import TypeVar

from mlservice.queue.base import Delivery, MoreQueued

log = logging.getLogger(__name__)

T = TypeVar("T")


class InProcessQueue:
    """The embedded default: one asyncio queue per model, consumed by in-process workers.

    Nothing survives a restart, and nothing needs to: at startup the service publishes every job
    the database still has queued.
    """

    durable = False
    connected = True

    def __init__(self) -> None:
        self._queues: defaultdict[str, asyncio.Queue[uuid.UUID]] = defaultdict(asyncio.Queue)

    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None:
        self._queues[model_slug].put_nowait(job_id)

    async def next_batch(
        self, model_slug: str, max_size: int, max_wait_s: float, more_queued: MoreQueued | None = None
    ) -> list[Delivery]:
        queue = self._queues[model_slug]
        job_ids = await gather_batch(queue, max_size, max_wait_s, more_queued)
        return [LocalDelivery(job_id, queue) for job_id in job_ids]

    async def close(self) -> None:
        return None

    def qsize(self, model_slug: str) -> int:
        return self._queues[model_slug].qsize()


@dataclass
class LocalDelivery:
    job_id: uuid.UUID
    queue: asyncio.Queue[uuid.UUID]

    async def ack(self) -> None:
        return None

    async def requeue(self) -> None:
        self.queue.put_nowait(self.job_id)

    async def dead_letter(self) -> None:
        # Nothing keeps messages here; the job row already says why it failed.
        log.warning("job %s dropped from the in-process queue after its last attempt", self.job_id)


async def gather_batch(
    queue: asyncio.Queue[T], max_size: int, max_wait_s: float, more_queued: MoreQueued | None = None
) -> list[T]:
    """Wait for one item, then take more until ``max_size`` or ``max_wait_s`` after the first.

    Before waiting for items not there yet, ``more_queued`` (if given) is asked whether any are
    on their way: when none is, the batch goes at once, so that an idle worker starts a job the
    moment it arrives instead of waiting out ``max_wait_s`` for company that is not coming.
    """
    batch = [await queue.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    _take_ready(queue, batch, max_size)
    if len(batch) >= max_size or max_wait_s <= 0:
        return batch
    if more_queued is not None and not await more_queued(len(batch)):
        _take_ready(queue, batch, max_size)  # what arrived while it was asked
        return batch
    while len(batch) < max_size:
        if not queue.empty():
            batch.append(queue.get_nowait())
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch


def _take_ready(queue: asyncio.Queue[T], batch: list[T], max_size: int) -> None:
    while len(batch) < max_size and not queue.empty():
        batch.append(queue.get_nowait())
