"""The operations on jobs that people ask for, each owning its unit of work: submit, cancel, wait.

Every entry point (``POST /api/jobs``, ``/v1``, the web UI, the Telegram bot) translates its
request into these calls and renders what they return; none opens a transaction of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.history.recording import RequestRecord, add_answer
from mlservice.history.usecases import record_refusal
from mlservice.idempotency.service import Outcome
from mlservice.jobs import service
from mlservice.jobs.errors import JobNotCancelable
from mlservice.jobs.tables import Job, JobStatus
from mlservice.jobs.validation import Submission, validate
from mlservice.predictors.base import InputLimits
from mlservice.webhooks.outbox import DEFAULT_FLAVOUR
from mlservice.webhooks.service import Subscription

if TYPE_CHECKING:
    from mlservice.components import Components


async def submit_job(
    components: Components,
    *,
    user_id: uuid.UUID,
    submission: Submission,
    record: RequestRecord,
    idempotency_key: str | None = None,
    webhook: Subscription | None = None,
    webhook_flavour: str = DEFAULT_FLAVOUR,
    reader: AsyncSession | None = None,
) -> Outcome:
    """Read the model, check and decode the input, then hold the price, queue the job and record
    the request, all in one write transaction; a refusal is recorded in a small transaction of its
    own and charges nothing.

    ``reader``: the request's read session, if the caller has one (the one that authenticated
    it): the model is read with it, and it is closed before the input is decoded, so no connection
    is held meanwhile nor while the SQLite writer is awaited.
    """
    record.describe(submission)
    settings = components.settings
    limits = InputLimits(settings.max_upload_bytes, settings.max_image_pixels)
    try:
        if reader is not None:
            model, predictor = await service.runnable_model(
                reader, submission.model_slug, components.predictors
            )
            await reader.close()
        else:
            async with components.db.session() as session:
                model, predictor = await service.runnable_model(
                    session, submission.model_slug, components.predictors
                )
        validated = await validate(model, predictor, submission, limits)
        record.describe_input(validated.meta)
        async with components.db.session(write=True) as session:
            outcome = await service.submit(
                session,
                user_id=user_id,
                submission=submission,
                idempotency_key=idempotency_key,
                predictors=components.predictors,
                limits=limits,
                storage=components.storage,
                publisher=components.publisher,
                validated=validated,
                webhook_url=webhook.url if webhook else None,
                webhook_events=webhook.events if webhook else None,
                webhook_flavour=webhook_flavour,
            )
            # In the job's own transaction: an accepted request and its job commit together.
            await add_answer(session, record, outcome)
        record.recorded = True
    except Exception as exc:
        await record_refusal(components.db, record, exc)
        raise
    return outcome


async def cancel_job(
    components: Components, user_id: uuid.UUID, job_id: uuid.UUID, *, finished_is_an_answer: bool = False
) -> Job:
    """Cancel a queued job and release its hold, in one transaction.

    ``finished_is_an_answer``: a job that already finished is returned as it is (Replicate's
    cancel), instead of refused with 409 (ours).
    """
    async with components.db.session(write=True) as session:
        try:
            return await service.cancel(session, user_id, job_id)
        except JobNotCancelable:
            if not finished_is_an_answer:
                raise
            job = await service.get_owned_job(session, user_id, job_id)
            if not JobStatus(job.status).finished:
                raise
            return job


async def list_jobs(
    components: Components, user_id: uuid.UUID, *, limit: int, offset: int = 0
) -> service.JobList:
    """The user's jobs, newest first (a read)."""
    async with components.db.session() as session:
        return await service.list_jobs(session, user_id, limit=limit, offset=offset)


async def read_artifact(
    components: Components, user_id: uuid.UUID, job_id: uuid.UUID, name: str
) -> service.StoredFile:
    """A file one of the user's jobs produced (a read)."""
    async with components.db.session() as session:
        return await service.read_artifact(session, components.storage, user_id, job_id, name)


async def read_job(components: Components, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    async with components.db.session() as session:
        return await service.get_owned_job(session, user_id, job_id)


async def wait_for_job(
    components: Components, user_id: uuid.UUID, job_id: uuid.UUID, timeout_s: float
) -> Job:
    """The job once it is finished, or as it is after ``timeout_s``; no connection is held meanwhile."""
    job = await read_job(components, user_id, job_id)
    if JobStatus(job.status).finished or timeout_s <= 0:
        return job
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    with components.events.waiter(job_id) as woken:
        while True:
            # Registered first, read second: a finish in between is not missed.
            job = await read_job(components, user_id, job_id)
            remaining = deadline - loop.time()
            if JobStatus(job.status).finished or remaining <= 0:
                return job
            try:
                await asyncio.wait_for(woken.wait(), remaining)
            except TimeoutError:
                return await read_job(components, user_id, job_id)
            woken.clear()
