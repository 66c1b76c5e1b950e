"""The job queue: carries job ids only; the database is the truth about every job."""

from __future__ import annotations

import uuid
from typing import Protocol


class JobQueue(Protocol):
    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None: ...

    async def next_batch(self, model_slug: str, max_size: int, max_wait_s: float) -> list[uuid.UUID]:
        """Wait for at least one job id, then gather up to ``max_size`` within ``max_wait_s``."""
        ...
