"""The operations on jobs that people ask for, each owning its unit of work: submit, cancel, wait.

Every entry point (``POST /api/jobs``, ``/v1``, the web UI, the Telegram bot) translates its
request into these calls and renders what they return; none opens a transaction of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from mlservice.history.recording import RequestRecord
from mlservice.history.usecases import record_refusal
from mlservice.idempotency.service import Outcome
from mlservice.jobs import repository, service
from mlservice.jobs.errors import JobNotCancelable, JobNotFound
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
    job_id: uuid.UUID | None = None,
) -> Outcome:
    """Read the model, check and decode the input, then hold the price, queue the job and record
    the request, all in one write transaction; a refusal is recorded in a small transaction of its
    own and charges nothing.

    On PostgreSQL a submit without an Idempotency-Key whose input is not stored in the database
    writes with one statement and no BEGIN/COMMIT: one round trip (see ``service.submit``).

    The model comes from the catalog cache (:mod:`mlservice.catalog.cache`), so no connection is
    held while the input is decoded nor while the SQLite writer is awaited. ``job_id``: the new
    job's id, when the caller chose it. Backpressure refuses before anything is held: the model's
    queue cap (:mod:`mlservice.jobs.backpressure`) first, the user's cap on unfinished jobs in the
    admitting statement itself.
    """
    record.describe(submission)
    settings = components.settings
    limits = InputLimits(settings.max_upload_bytes, settings.max_image_pixels)
    try:
        model = await components.catalog.runnable(submission.model_slug)
        predictor = service.installed_predictor(model, components.predictors)
        await components.queue_caps.check(model)
        validated = await validate(model, predictor, submission, limits)
        record.describe_input(validated.meta)
        storage = components.storage
        one_statement = idempotency_key is None and not (
            submission.data is not None and storage.joins_transactions
        )
        async with components.db.session(write=True, one_statement=one_statement) as session:
            # The accepted request's history row is written with its job, in this transaction.
            outcome = await service.submit(
                session,
                user_id=user_id,
                submission=submission,
                idempotency_key=idempotency_key,
                predictors=components.predictors,
                limits=limits,
                storage=storage,
                publisher=components.publisher,
                record=record,
                validated=validated,
                webhook_url=webhook.url if webhook else None,
                webhook_events=webhook.events if webhook else None,
                webhook_flavour=webhook_flavour,
                job_id=job_id,
                unfinished_cap=settings.max_unfinished_jobs_per_user,
            )
        if not outcome.replayed:
            components.queue_caps.admitted(model.slug)
        record.recorded = True
    except Exception as exc:
        await record_refusal(components.db, record, exc)
        raise
    return outcome


async def submit_and_wait(
    components: Components,
    *,
    user_id: uuid.UUID,
    submission: Submission,
    record: RequestRecord,
    wait_s: float,
    idempotency_key: str | None = None,
    webhook: Subscription | None = None,
    webhook_flavour: str = DEFAULT_FLAVOUR,
) -> tuple[Outcome, Job]:
    """:func:`submit_job`, then the job once it finished or as it is after ``wait_s``.

    The wait is registered before the job exists, so its finish cannot be missed and the job is
    read once, when it finished or the wait ended. A replay waits for the first request's job.
    """
    job_id = uuid.uuid4()
    deadline = asyncio.get_running_loop().time() + wait_s
    with components.events.waiter(job_id) as woken:
        outcome = await submit_job(
            components,
            user_id=user_id,
            submission=submission,
            record=record,
            idempotency_key=idempotency_key,
            webhook=webhook,
            webhook_flavour=webhook_flavour,
            job_id=job_id,
        )
        if not outcome.replayed:
            return outcome, await _wait(components, user_id, job_id, woken, deadline)
    replayed = uuid.UUID(str(outcome.body["id"]))
    remaining = deadline - asyncio.get_running_loop().time()
    return outcome, await wait_for_job(components, user_id, replayed, remaining)


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
    """The job as the database has it now, if ``user_id`` owns it (a read of its row, no more)."""
    if not components.db.is_sqlite:
        async with components.db.driver() as connection:
            job = await repository.read_owned_directly(connection, user_id, job_id)
    else:
        async with components.db.session() as session:
            job = await repository.read_owned(session, user_id, job_id)
    if job is None:
        raise JobNotFound("Job not found.")
    return job


async def wait_for_job(
    components: Components,
    user_id: uuid.UUID,
    job_id: uuid.UUID,
    timeout_s: float,
) -> Job:
    """The job once it is finished, or as it is after ``timeout_s``; no connection is held meanwhile.

    The job is read once more than it is woken: when already finished, once; else again when its
    finish is announced (or the wait ends).
    """
    if timeout_s <= 0:
        return await read_job(components, user_id, job_id)
    deadline = asyncio.get_running_loop().time() + timeout_s
    with components.events.waiter(job_id) as woken:
        # Registered first, read second: a finish in between is not missed.
        job = await read_job(components, user_id, job_id)
        if JobStatus(job.status).finished:
            return job
        return await _wait(components, user_id, job_id, woken, deadline)


async def _wait(
    components: Components, user_id: uuid.UUID, job_id: uuid.UUID, woken: asyncio.Event, deadline: float
) -> Job:
    """Wait for ``woken`` (set once the job may have finished) and read the job, until it is
    finished or ``deadline`` has passed; the waiter was registered before the job was last seen
    unfinished. A wake-up is only a hint (one for every waiter when the listener reconnects)."""
    loop = asyncio.get_running_loop()
    while True:
        remaining = deadline - loop.time()
        if remaining > 0:
            try:
                async with asyncio.timeout(remaining):
                    await woken.wait()
            except TimeoutError:
                pass
        woken.clear()
        job = await read_job(components, user_id, job_id)
        if JobStatus(job.status).finished or loop.time() >= deadline:
            return job
