"""Running a model for a chat: the same submit as ``POST /api/jobs``, recorded the same way."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlservice.history.recording import RequestRecord
from mlservice.jobs import usecases
from mlservice.jobs.tables import Job
from mlservice.jobs.validation import Submission

if TYPE_CHECKING:
    from mlservice.components import Components


@dataclass(frozen=True)
class ChatInput:
    data: bytes | None = None
    filename: str | None = None
    text: str | None = None


async def run_model(
    components: Components,
    user_id: uuid.UUID,
    slug: str,
    given: ChatInput,
    params: dict[str, Any] | None = None,
    *,
    wait_s: float,
) -> Job:
    """Submit a job for ``user_id`` and wait up to ``wait_s`` for it to finish.

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
    job_id = uuid.UUID(str(outcome.body["id"]))
    return await usecases.wait_for_job(components, user_id, job_id, wait_s)
