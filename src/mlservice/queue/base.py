"""The job queue: carries job ids only; the database is the truth about every job."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Protocol

# Given how many jobs a batch holds, whether more of its model are queued (worth waiting for).
MoreQueued = Callable[[int], Awaitable[bool]]


class Delivery(Protocol):
    """One job id handed to a worker; acknowledged once its outcome is committed."""

    job_id: uuid.UUID

    async def ack(self) -> None: ...

    async def requeue(self) -> None:
        """Give the message back to be delivered again (a retry, or a worker that stops early)."""
        ...

    async def dead_letter(self) -> None:
        """Drop the message for good, keeping it where operators can inspect it (if the broker can)."""
        ...


class JobQueue(Protocol):
    # True when published messages survive this process (a broker): the publisher then records
    # which jobs were confirmed so that a relay can republish the others.
    durable: bool

    @property
    def connected(self) -> bool:
        """Whether publishing and consuming can work right now (for readiness checks)."""
        ...

    async def publish(self, model_slug: str, job_id: uuid.UUID) -> None:
        """Hand a job id to the workers; returns once the broker has confirmed it."""
        ...

    async def next_batch(
        self, model_slug: str, max_size: int, max_wait_s: float, more_queued: MoreQueued | None = None
    ) -> list[Delivery]:
        """Wait for at least one delivery, then gather up to ``max_size`` within ``max_wait_s``
        (not waiting at all when ``more_queued`` says that no more are queued)."""
        ...

    async def close(self) -> None: ...
