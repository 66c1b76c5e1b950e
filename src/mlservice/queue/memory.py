from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict


class InProcessQueue:
    """The embedded default: one asyncio queue per model, consumed by in-process workers.

    Nothing survives a restart, and nothing needs to: at startup the service publishes every job
    the database still has queued.
    """

    def __init__(self) -> None:
        self._queues: defaultdict[str, asyncio.Queue[uuid.UUID]] = defaultdict(asyncio.Queue)

    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None:
        self._queues[model_slug].put_nowait(job_id)

    async def next_batch(self, model_slug: str, max_size: int, max_wait_s: float) -> list[uuid.UUID]:
        queue = self._queues[model_slug]
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

    def qsize(self, model_slug: str) -> int:
        return self._queues[model_slug].qsize()
