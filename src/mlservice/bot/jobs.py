"""Running a model for a chat: the same submit as ``POST /api/jobs``, recorded the same way."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlservice.history.recording import RequestRecord
from mlservice.jobs import usecases
from mlservice.jobs.tables import Job, JobStatus
from mlservice.jobs.validation import Submission

if TYPE_CHECKING:
    from mlservice.components import Components

# A job that finishes within FIRST_WAIT_S gets its result only; one that takes longer gets a status
# message, edited with what the job reports at most every PROGRESS_EVERY_S (Telegram limits edits).
FIRST_WAIT_S = 1.0
PROGRESS_EVERY_S = 2.0


@dataclass(frozen=True)
class ChatInput:
    data: bytes | None = None
    filename: str | None = None
    text: str | None = None


async def submit_model(
    components: Components,
    user_id: uuid.UUID,
    slug: str,
    given: ChatInput,
    params: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Submit a job for ``user_id``; its id.

    Refusals (no such model, bad input, not enough credits) raise the service's own errors and
    are recorded in the request history like the API's.
    """
    submission = Submission(
        model_slug=slug,
        raw_params=json.dumps(params) if params else None,
        data=given.data,
        filename=given.filename,
        text=given.text,
    )
    outcome = await usecases.submit_job(
        components, user_id=user_id, submission=submission, record=RequestRecord(user_id=user_id)
    )
    return uuid.UUID(str(outcome.body["id"]))


async def follow_job(
    components: Components,
    user_id: uuid.UUID,
    job_id: uuid.UUID,
    *,
    wait_s: float,
    on_unfinished: Callable[[Job], Awaitable[None]],
    first_wait_s: float = FIRST_WAIT_S,
    every_s: float = PROGRESS_EVERY_S,
) -> Job:
    """The job once it finished, or as it is after ``wait_s``. Not finished after ``first_wait_s``,
    and then every ``every_s``, it is given to ``on_unfinished`` (to show its status and progress)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    job = await usecases.wait_for_job(components, user_id, job_id, min(first_wait_s, wait_s))
    while not JobStatus(job.status).finished and (left := deadline - loop.time()) > 0:
        await on_unfinished(job)
        job = await usecases.wait_for_job(components, user_id, job_id, min(every_s, left))
    return job
