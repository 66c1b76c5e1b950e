"""Replicate's predictions over our jobs: submitted, read and listed newest first by cursor.

Everything a prediction costs, checks and records is :mod:`mlservice.jobs.service`'s, exactly as for
``POST /api/jobs``; this module only translates. A job is shown as a prediction by
:mod:`mlservice.jobs.prediction_view`.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.history.recording import RequestRecord
from mlservice.jobs import repository, usecases
from mlservice.jobs import service as jobs
from mlservice.jobs.errors import JobNotFound
from mlservice.jobs.prediction_view import WEBHOOK_FLAVOUR
from mlservice.jobs.tables import Job
from mlservice.jobs.validation import Submission
from mlservice.replicate.errors import InvalidCursor
from mlservice.replicate.inputs import resolve_file, split_input
from mlservice.replicate.schemas import PredictionCreate
from mlservice.webhooks.service import subscription

if TYPE_CHECKING:
    from mlservice.components import Components


async def submit_prediction(
    session: AsyncSession,
    components: Components,
    *,
    user_id: uuid.UUID,
    slug: str,
    body: PredictionCreate,
    record: RequestRecord,
    idempotency_key: str | None,
    base_url: str,
    cancel_after_s: float | None = None,
) -> uuid.UUID:
    """Submit a prediction as ``POST /api/jobs`` submits a job, and return the job's id.

    ``session`` is the request's read session: any file input is read with it, then it is closed
    before the input is decoded and the write transaction waits for the writer.
    """
    settings = components.settings
    cls = jobs.installed_predictor(await components.catalog.runnable(slug), components.predictors)
    given = split_input(cls, body.input)
    webhook_url, events = body.webhook, body.webhook_events_filter
    if webhook_url is None and body.webhook_completed is not None:
        webhook_url, events = body.webhook_completed, events or ["completed"]
    webhook = subscription(webhook_url, events, allow_private=settings.webhook_allow_private)
    file = None
    if given.file is not None:
        file = await resolve_file(
            given.file,
            session=session,
            storage=components.storage,
            user_id=user_id,
            base_url=base_url,
            max_bytes=settings.max_upload_bytes,
        )
    submission = Submission(
        model_slug=slug,
        raw_params=json.dumps(given.params),
        data=file.data if file else None,
        filename=file.filename if file else None,
        text=given.text,
        cancel_after_s=cancel_after_s,
    )
    record.describe(submission)
    await session.close()
    outcome = await usecases.submit_job(
        components,
        user_id=user_id,
        submission=submission,
        record=record,
        idempotency_key=idempotency_key,
        webhook=webhook,
        webhook_flavour=WEBHOOK_FLAVOUR,
    )
    return uuid.UUID(str(outcome.body["id"]))


async def prediction_job(
    components: Components, user_id: uuid.UUID, job_id: uuid.UUID, wait_s: float | None
) -> Job:
    """The job as it is now or, with ``wait_s``, once it finished or the wait ran out."""
    if wait_s:
        return await usecases.wait_for_job(components, user_id, job_id, wait_s)
    return await usecases.read_job(components, user_id, job_id)


def parse_prediction_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise JobNotFound("Prediction not found.") from None


# -- cursors --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cursor:
    """A place in the newest-first list of a user's jobs; ``older``: the page after it, else before."""

    older: bool
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = json.dumps([int(self.older), self.created_at.isoformat(), str(self.id)])
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        refused = InvalidCursor("This cursor is not one this server made.")
        try:
            parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        except (ValueError, binascii.Error):
            raise refused from None
        if not (isinstance(parts, list) and len(parts) == 3 and all(isinstance(p, str) for p in parts[1:])):
            raise refused
        try:
            at = datetime.fromisoformat(parts[1])
            job_id = uuid.UUID(parts[2])
        except ValueError:
            raise refused from None
        if at.tzinfo is None:
            raise refused
        return cls(bool(parts[0]), at, job_id)

    @classmethod
    def at(cls, job: Job, *, older: bool) -> Cursor:
        return cls(older, job.created_at, job.id)


@dataclass
class JobsPage:
    jobs: list[Job]
    previous: Cursor | None
    next: Cursor | None


async def list_predictions(
    session: AsyncSession, user_id: uuid.UUID, cursor: Cursor | None, limit: int
) -> JobsPage:
    """A page of the user's jobs, newest first, by keyset: new jobs never shift the pages."""
    older = cursor is None or cursor.older
    after = (cursor.created_at, cursor.id) if cursor is not None else None
    rows = await repository.keyset_page(session, user_id, after=after, older=older, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    if cursor is not None and not cursor.older:
        rows.reverse()
    if not rows:
        return JobsPage([], None, None)
    older_exist = more if cursor is None or cursor.older else True
    newer_exist = cursor is not None and (cursor.older or more)
    return JobsPage(
        rows,
        previous=Cursor.at(rows[0], older=False) if newer_exist else None,
        next=Cursor.at(rows[-1], older=True) if older_exist else None,
    )
