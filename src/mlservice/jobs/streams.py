"""A job's states as they change, for its event streams (``GET /api/jobs/{id}/events``,
``/v1/predictions/{id}/stream``), and the cap on the streams each user keeps open.

A stream holds no database connection while it waits: it registers a watcher of the job (see
:mod:`mlservice.jobs.events`), reads the job, and reads it again when woken. A wake-up is only a
hint, and a claim in another process wakes no one: a queued job is looked at again every
``QUEUED_LOOK_S``, a running one every ``RUNNING_LOOK_S`` (a safety net; its progress and finish
wake the watchers).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from mlservice.jobs import usecases
from mlservice.jobs.tables import Job, JobStatus

if TYPE_CHECKING:
    from mlservice.components import Components

QUEUED_LOOK_S = 1.0
RUNNING_LOOK_S = 5.0
# Keep-alive comments on an idle stream (proxies close connections that say nothing for long).
PING_S = 15


def state_token(job: Job) -> str:
    """A short token of what a stream shows of the job: its status, progress and finish (the
    event's ``id``; a client reconnecting with it as ``Last-Event-ID`` is not sent it again)."""
    finished = job.finished_at.isoformat() if job.finished_at is not None else ""
    raw = f"{job.status}|{job.progress!r}|{job.progress_message or ''}|{finished}"
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


async def watch_job(
    components: Components, user_id: uuid.UUID, job_id: uuid.UUID, *, seen: str | None = None
) -> AsyncIterator[Job]:
    """The job as it is now, then each time it changed, until (and with) a final state.

    ``seen``: the token of a state the client already has (its ``Last-Event-ID``): that state is
    not yielded again. Raises ``JobNotFound`` if the user owns no such job."""
    loop = asyncio.get_running_loop()
    with components.events.watcher(job_id) as woken:
        # Registered first, read second: a change in between is not missed.
        job = await usecases.read_job(components, user_id, job_id)
        last = seen
        while True:
            token = state_token(job)
            if token != last:
                last = token
                yield job
            status = JobStatus(job.status)
            if status.finished:
                return
            look = QUEUED_LOOK_S if status is JobStatus.queued else RUNNING_LOOK_S
            deadline = loop.time() + look
            try:
                async with asyncio.timeout_at(deadline):
                    await woken.wait()
            except TimeoutError:
                pass
            woken.clear()
            job = await usecases.read_job(components, user_id, job_id)
