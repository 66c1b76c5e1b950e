from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import TypeVar

from mlservice.queue.base import Delivery, LocalDelivery

T = TypeVar("T")


class InProcessQueue:
    """The embedded default: one asyncio queue per model, consumed by in-process workers.

    Nothing survives a restart, and nothing needs to: at startup the service publishes every job
    the database still has queued.
    """

    def __init__(self) -> None:
        self._queues: defaultdict[str, asyncio.Queue[uuid.UUID]] = defaultdict(asyncio.Queue)

    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None:
        self._queues[model_slug].put_nowait(job_id)

    async def next_batch(self, model_slug: str, max_size: int, max_wait_s: float) -> list[Delivery]:
        return [
            LocalDelivery(job_id)
            for job_id in await gather_batch(self._queues[model_slug], max_size, max_wait_s)
        ]

    async def close(self) -> None:
        return None

    def qsize(self, model_slug: str) -> int:
        return self._queues[model_slug].qsize()


async def gather_batch(queue: asyncio.Queue[T], max_size: int, max_wait_s: float) -> list[T]:
    """Wait for one item, then take more until ``max_size`` or ``max_wait_s`` after the first."""
    batch = [await queue.get()]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
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
