"""The job queue: carries job ids only; the database is the truth about every job."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol


class Delivery(Protocol):
    """One job id handed to a worker; acknowledged once its outcome is committed."""

    job_id: uuid.UUID

    async def ack(self) -> None: ...

    async def requeue(self) -> None:
        """Give the message back (e.g. the worker is shutting down before it ran the job)."""
        ...


@dataclass
class LocalDelivery:
    job_id: uuid.UUID

    async def ack(self) -> None:
        return None

    async def requeue(self) -> None:
        return None


class JobQueue(Protocol):
    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None:
        """Hand a job id to the workers; returns once the broker has confirmed it."""
        ...

    async def next_batch(self, model_slug: str, max_size: int, max_wait_s: float) -> list[Delivery]:
        """Wait for at least one delivery, then gather up to ``max_size`` within ``max_wait_s``."""
        ...

    async def close(self) -> None: ...
