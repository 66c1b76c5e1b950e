"""Submitting, reading and canceling jobs. Execution lives in :mod:`mlservice.jobs.executor`."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.catalog.service import get_runnable_model
from mlservice.catalog.tables import CatalogModel
from mlservice.db import after_rollback
from mlservice.history.recording import RequestRecord, add_answer
from mlservice.idempotency import service as idempotency
from mlservice.jobs import admission, live_repository, repository
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.errors import FilesExpired, JobNotCancelable, JobNotFound, ModelUnavailable
from mlservice.jobs.events import announce_canceled, announce_finished
from mlservice.jobs.settle import artifact_key
from mlservice.jobs.tables import Job, JobStatus
from mlservice.jobs.validation import Submission, Validated, validate
from mlservice.jobs.views import job_read
from mlservice.observability.context import current_request_id
from mlservice.observability.jobs import job_ended, job_queued
from mlservice.observability.metrics import ServiceMetrics
from mlservice.predictors.base import InputLimits, Predictor
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.wallet import grants
from mlservice.wallet import service as wallet
from mlservice.wallet.errors import InsufficientCredits
from mlservice.webhooks import outbox as webhooks


def input_key(job_id: uuid.UUID) -> str:
    return f"jobs/{job_id}/input"


def installed_predictor(model: CatalogModel, predictors: Mapping[str, type[Predictor]]) -> type[Predictor]:
    """The predictor of a catalog model, if it is installed on this server."""
    cls = predictors.get(model.slug)
    if cls is None:
        raise ModelUnavailable(f"The model {model.slug!r} is not installed on this server.")
    return cls


async def runnable_model(
    session: AsyncSession, slug: str, predictors: Mapping[str, type[Predictor]]
) -> tuple[CatalogModel, type[Predictor]]:
    """The catalog row of a model that is enabled and installed on this server, and its predictor."""
    model = await get_runnable_model(session, slug)
    return model, installed_predictor(model, predictors)


async def submit(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    submission: Submission,
    idempotency_key: str | None,
    predictors: Mapping[str, type[Predictor]],
    limits: InputLimits,
    storage: Storage,
    publisher: JobPublisher,
    record: RequestRecord,
    validated: Validated | None = None,
    webhook_url: str | None = None,
    webhook_events: Sequence[str] | None = None,
    webhook_flavour: str = webhooks.DEFAULT_FLAVOUR,
    job_id: uuid.UUID | None = None,
    unfinished_cap: int = 0,
) -> idempotency.Outcome:
    """Validate, hold the price, queue the job and record the accepted request, all in the
    caller's unit of work.

    Anything wrong with the request raises before a row is written; the job, its hold, its ledger
    entry, its history row (``record``) and the stored input commit together, and the queue hears
    of the job only after that commit. Without an ``idempotency_key`` and with an input that is not
    stored in the database, the only statement is the last one (:func:`admission.admit`), so the
    caller may run it as a unit of work of one statement (``Database.session(one_statement=True)``).
    ``webhook_*``: the job's webhook, checked by the caller (``webhooks.service.subscription``);
    ``webhook_flavour`` names the formatter of its bodies (see :mod:`mlservice.webhooks`).
    ``job_id``: the new job's id, if the caller chose it (to wait for it before it exists).
    ``unfinished_cap``: the most unfinished jobs the user may have (0: no cap), checked with the hold.
    """
    if validated is None or validated.model is None:
        found, cls = await runnable_model(session, submission.model_slug, predictors)
        validated = await validate(found, cls, submission, limits)
    model = validated.model
    assert model is not None
    params, meta, text = validated.params, validated.meta, validated.text
    new_id = job_id or uuid.uuid4()

    async def create() -> tuple[int, dict[str, Any]]:
        now = utcnow()
        grants_now = grants.now()
        # Not added to the session: the rows are written by one Core statement; this is what the
        # answer, the metrics and the webhook fields are made from.
        job = Job(
            id=new_id,
            input_file=input_key(new_id) if submission.data is not None else None,
            user_id=user_id,
            model_slug=model.slug,
            status=JobStatus.queued,
            cost=model.price,
            params=params,
            input_meta=meta,
            input_text=text,
            artifacts={},
            attempts=0,
            created_at=now,
            request_id=current_request_id(),
            cancel_at=(
                None
                if submission.cancel_after_s is None
                else now + timedelta(seconds=submission.cancel_after_s)
            ),
        )
        if webhook_url:
            webhooks.subscribe(job, webhook_url, webhook_events, flavour=webhook_flavour)
        if job.input_file is not None and submission.data is not None:
            # Before the rows: the rows' statement is the last of the unit of work, whatever
            # storage this is (see above); a refusal or a rollback deletes the file again.
            key = job.input_file
            after_rollback(session, lambda: storage.delete(key))
            await storage.put(key, submission.data, session=session)
        body = job_read(job).model_dump(mode="json")
        publisher.publish_after_commit(session, model.slug, new_id)
        job_queued(session, job)
        values = {
            "b_job_id": new_id,
            "b_user_id": user_id,
            "b_price": model.price,
            "b_now": now,
            "b_model_slug": model.slug,
            "b_params": params,
            "b_input_meta": meta,
            "b_input_file": job.input_file,
            "b_input_text": text,
            "b_request_id": job.request_id,
            "b_webhook_url": job.webhook_url,
            "b_webhook_events": job.webhook_events,
            "b_webhook_flavour": job.webhook_flavour,
            "b_cancel_at": job.cancel_at,
            # The clock grants expire by (a test may move it apart from the others).
            "b_grants_now": grants_now,
            # The accepted request's history row (see RequestRecord.row).
            "b_received_at": record.received_at,
            "b_requested_slug": record.model_slug,
            "b_input_bytes": record.input_bytes,
            "b_image_width": record.image_width,
            "b_image_height": record.image_height,
            "b_record_request_id": record.request_id,
        }
        # A second try only if the account, read after a refusal, could pay after all: it
        # changed in between (a concurrent release, a top-up).
        for _ in range(2):
            if await admission.admit(session, values, unfinished_cap):
                return 201, body
            refused = await admission.refusal(session, user_id, model.price, unfinished_cap, grants_now)
            if refused is not None:
                raise refused
        raise InsufficientCredits(
            f"This run costs {model.price} credits; the wallet changed while it was checked. Try again.",
            price=model.price,
        )

    if idempotency_key is None:
        return idempotency.Outcome(*await create())
    fingerprint = idempotency.request_fingerprint(
        model=model.slug,
        params=params,
        text=text,
        file=hashlib.sha256(submission.data).hexdigest() if submission.data is not None else None,
        # Only with a webhook: keys of submissions without one keep their fingerprints.
        **({"webhook": [webhook_url, webhook_events]} if webhook_url else {}),
        **({"cancel_after": submission.cancel_after_s} if submission.cancel_after_s is not None else {}),
    )
    outcome = await idempotency.run_once(
        session, user_id, "jobs.create", idempotency_key, fingerprint, create
    )
    if outcome.replayed:
        # The first request's job, not a new one: recorded as a replay (no job, no charge).
        await add_answer(session, record, outcome)
    return outcome


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    media_type: str
    filename: str


def _check_files_kept(job: Job) -> None:
    if job.files_expired_at is not None:
        raise FilesExpired(
            f"This job's files expired on {job.files_expired_at:%Y-%m-%d} and are no longer stored; "
            "the job and its result are kept.",
            files_expired_at=job.files_expired_at.isoformat(),
        )


async def read_input(
    session: AsyncSession, storage: Storage, user_id: uuid.UUID, job_id: uuid.UUID
) -> StoredFile:
    job = await get_owned_job(session, user_id, job_id)
    if job.input_file is None:
        raise JobNotFound("This job has no input file.", code="file_not_found")
    _check_files_kept(job)
    try:
        data = await storage.get(job.input_file, session=session)
    except FileNotFoundError:
        raise JobNotFound("The input file is no longer stored.", code="file_not_found") from None
    # Uploads are served back as opaque bytes, never with a type a browser would render or run.
    return StoredFile(data, "application/octet-stream", f"{job.id}-input")


async def read_artifact(
    session: AsyncSession, storage: Storage, user_id: uuid.UUID, job_id: uuid.UUID, name: str
) -> StoredFile:
    job = await get_owned_job(session, user_id, job_id)
    meta = (job.artifacts or {}).get(name)
    if meta is None:
        raise JobNotFound(f"This job has no artifact {name!r}.", code="artifact_not_found")
    _check_files_kept(job)
    try:
        data = await storage.get(artifact_key(job.id, name), session=session)
    except FileNotFoundError:
        raise JobNotFound("The artifact is no longer stored.", code="artifact_not_found") from None
    return StoredFile(data, str(meta["media_type"]), str(meta["filename"]))


async def get_owned_job(session: AsyncSession, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """The job if ``user_id`` owns it; anybody else's id is answered as not found."""
    job = await repository.get(session, job_id)
    if job is None or job.user_id != user_id:
        raise JobNotFound("Job not found.")
    return job


@dataclass
class JobList:
    items: list[Job]
    total: int


async def list_jobs(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    limit: int,
    offset: int,
    status: JobStatus | None = None,
    model_slug: str | None = None,
) -> JobList:
    items, total = await repository.page_of(
        session, user_id, limit=limit, offset=offset, status=status, model_slug=model_slug
    )
    return JobList(items=items, total=total)


async def cancel(session: AsyncSession, user_id: uuid.UUID, job_id: uuid.UUID) -> Job:
    """Cancel a job that has not finished and release its hold, exactly once.

    Queued, it never runs. Running, it is canceled at once; its worker is told to stop, and the
    guard on the outcome drops whatever it produces afterwards.
    """
    job = await get_owned_job(session, user_id, job_id)
    # The wallet before the job, as the worker's settle locks them: the two cannot deadlock.
    await wallet.lock_wallets(session, [user_id])
    if not await live_repository.end_unfinished(session, job.id, JobStatus.canceled):
        await session.refresh(job)
        raise JobNotCancelable(f"This job already {job.status}; it cannot be canceled.", status=job.status)
    await _ended(session, job, JobStatus.canceled)
    await session.refresh(job)
    return job


async def end_overdue(
    session: AsyncSession, *, limit: int = 500, metrics: ServiceMetrics | None = None
) -> int:
    """End the jobs whose ``Cancel-After`` deadline passed: a queued one is aborted (it never
    started, it costs nothing), a running one canceled; either way its hold is released. How many
    it ended (at most ``limit``)."""
    overdue = await live_repository.overdue(session, utcnow(), limit=limit)
    if not overdue:
        return 0
    await wallet.lock_wallets(session, [user_id for _, user_id, _ in overdue])
    ended: list[tuple[uuid.UUID, JobStatus]] = []
    for job_id, _, status in overdue:
        final = JobStatus.aborted if status == JobStatus.queued else JobStatus.canceled
        if await live_repository.end_unfinished(session, job_id, final, only=JobStatus(status)):
            ended.append((job_id, final))
    jobs = await repository.many(session, [job_id for job_id, _ in ended])
    for job_id, final in ended:
        await _ended(session, jobs[job_id], final, metrics=metrics)
    return len(ended)


async def _ended(
    session: AsyncSession, job: Job, status: JobStatus, *, metrics: ServiceMetrics | None = None
) -> None:
    """What a job ended by its owner or its deadline (not by a worker) brings with it."""
    await wallet.release_hold(session, job.id)
    await announce_finished(session, job.id)
    # A worker may have claimed it: it stops the predictor (a queued job's worker finds nothing).
    await announce_canceled(session, job.id)
    if job.webhook_url:
        webhooks.enqueue(session, job, "completed")
    job_ended(session, job, status, metrics=metrics)
