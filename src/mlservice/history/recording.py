"""Recording prediction requests as they are answered.

An accepted request's row is written by the submit's own unit of work, next to its job; a refused
request's row is written by :func:`prediction_request` in a small transaction of its own, after
the submit's has rolled back, so a refusal never charges anything or changes its answer.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlservice.deps import get_components
from mlservice.errors import AppError
from mlservice.history.tables import PredictionRequest
from mlservice.observability.context import current_request_id, valid_request_id
from mlservice.predictors.base import InvalidInput
from mlservice.types import utcnow
from mlservice.users.auth import CurrentUser

if TYPE_CHECKING:
    from mlservice.db import Database
    from mlservice.idempotency.service import Outcome
    from mlservice.jobs.validation import Submission

log = logging.getLogger(__name__)

MAX_SLUG_LENGTH = 64


@dataclass
class RequestRecord:
    """What is known of one prediction request so far; filled in as the request is handled."""

    user_id: uuid.UUID
    request_id: str | None = None
    received_at: datetime = field(default_factory=utcnow)
    model_slug: str | None = None
    input_bytes: int | None = None
    image_width: int | None = None
    image_height: int | None = None

    def describe(self, submission: Submission) -> None:
        self.model_slug = submission.model_slug[:MAX_SLUG_LENGTH]
        if submission.data is not None:
            self.input_bytes = len(submission.data)
        elif submission.text is not None:
            self.input_bytes = len(submission.text.encode())

    def describe_input(self, meta: Mapping[str, Any]) -> None:
        """Keep the image size from the metadata the predictor returned for a valid input."""
        width, height = meta.get("width"), meta.get("height")
        if isinstance(width, int) and isinstance(height, int):
            self.image_width, self.image_height = width, height

    def row(
        self,
        http_status: int,
        *,
        error_code: str | None = None,
        job_id: uuid.UUID | None = None,
        replayed: bool = False,
    ) -> PredictionRequest:
        return PredictionRequest(
            created_at=self.received_at,
            user_id=self.user_id,
            model_slug=self.model_slug,
            http_status=http_status,
            error_code=error_code[:64] if error_code else None,
            input_bytes=self.input_bytes,
            image_width=self.image_width,
            image_height=self.image_height,
            request_id=self.request_id,
            job_id=job_id,
            replayed=replayed,
        )


async def add_answer(session: AsyncSession, record: RequestRecord, outcome: Outcome) -> None:
    """Add the accepted request's row to the unit of work that created (or replayed) its job."""
    # The job's row goes first: without a relationship the unit of work would not order them.
    await session.flush()
    job_id = outcome.body.get("id")
    session.add(
        record.row(
            outcome.status_code,
            job_id=uuid.UUID(str(job_id)) if job_id else None,
            replayed=outcome.replayed,
        )
    )


def refusal(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and error code the client gets for ``exc`` (see :mod:`mlservice.errors`)."""
    if isinstance(exc, AppError | InvalidInput):
        return exc.status_code, exc.code
    if isinstance(exc, RequestValidationError):
        return 422, "validation_error"
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail
        if isinstance(detail, dict) and "code" in detail:
            return exc.status_code, str(detail["code"]).lower()
        return exc.status_code, f"http_{exc.status_code}"
    return 500, "internal_error"


async def record_refusal(db: Database, record: RequestRecord, exc: BaseException) -> None:
    """Write a refused request's row in its own transaction; a failure here is only logged."""
    status, code = refusal(exc)
    try:
        async with db.session(write=True) as session:
            session.add(record.row(status, error_code=code))
    except Exception:
        log.warning("could not record the refused prediction request", exc_info=True)


def request_id_of(request: Request) -> str | None:
    """The id the observability middleware gave this request (the client's X-Request-ID if valid)."""
    return current_request_id() or valid_request_id(request.headers.get("X-Request-ID"))


async def _describe_from_form(record: RequestRecord, request: Request) -> None:
    """For requests refused before the handler described them (form errors, oversized files)."""
    try:
        form = await request.form()
    except Exception:  # the body may have been streamed, or was not a form at all
        return
    model, upload, text = form.get("model"), form.get("file"), form.get("text")
    if isinstance(model, str):
        record.model_slug = model[:MAX_SLUG_LENGTH]
    if isinstance(upload, UploadFile) and upload.size is not None:
        record.input_bytes = upload.size
    elif isinstance(text, str):
        record.input_bytes = len(text.encode())


async def prediction_request(request: Request, user: CurrentUser) -> AsyncIterator[RequestRecord]:
    """The record of this request; its row is written here if the request is refused."""
    record = RequestRecord(user_id=user.id, request_id=request_id_of(request))
    try:
        yield record
    except Exception as exc:
        if record.model_slug is None:
            await _describe_from_form(record, request)
        await record_refusal(get_components(request).db, record, exc)
        raise


# scope="function": the refusal is recorded before its error response goes out.
PredictionRequestDep = Annotated[RequestRecord, Depends(prediction_request, scope="function")]
