"""Running a model for a chat: the same submit as ``POST /api/jobs``, recorded the same way."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlservice.errors import AppError
from mlservice.history.recording import RequestRecord, record_refusal
from mlservice.jobs import service as jobs
from mlservice.jobs.submission import submit_recorded
from mlservice.jobs.tables import Job
from mlservice.jobs.validation import Submission
from mlservice.predictors.base import InvalidInput

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
    record = RequestRecord(user_id=user_id)
    record.describe(submission)
    try:
        async with components.db.session() as session:
            model, predictor = await jobs.runnable_model(session, slug, components.predictors)
        outcome = await submit_recorded(
            components,
            user_id=user_id,
            submission=submission,
            model=model,
            predictor=predictor,
            record=record,
        )
    except (AppError, InvalidInput) as exc:
        await record_refusal(components.db, record, exc)
        raise
    job_id = uuid.UUID(str(outcome.body["id"]))
    return await jobs.wait_for_job(components.db, components.events, user_id, job_id, wait_s)
