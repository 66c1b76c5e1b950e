"""Recording prediction requests as they are answered.

An accepted request's row is written by the submit's own unit of work, next to its job: by the
statement that writes the job (see :mod:`mlservice.jobs.admission`), or by :func:`add_answer` for
a replay. A refused request's row is written by :func:`mlservice.history.usecases.record_refusal`
in a small transaction of its own, after the submit's has rolled back, so a refusal never charges
anything or changes its answer.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import describe_error
from mlservice.history.tables import PredictionRequest
from mlservice.types import utcnow

if TYPE_CHECKING:
    from mlservice.idempotency.service import Outcome
    from mlservice.jobs.validation import Submission

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
    # Set once the request's row is committed: a refusal that passes through several layers (the
    # submit use case, then the HTTP route) is written once.
    recorded: bool = False

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
    """Add the accepted request's row to the unit of work that answered it; the submit statement
    writes a new job's itself, so this is for requests answered with an earlier job (replays)."""
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
    """The HTTP status and error code the client gets for ``exc``."""
    info = describe_error(exc)
    return info.status_code, info.code
