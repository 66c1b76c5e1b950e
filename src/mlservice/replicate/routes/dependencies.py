"""What the ``/v1`` routes take from a request: its user (by bearer token only), the submission
rate limit, a prediction request's history record, Replicate's headers and the page size."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from mlservice.history.dependencies import request_id_of
from mlservice.history.recording import MAX_SLUG_LENGTH, RequestRecord
from mlservice.replicate.pages import PAGE_SIZE
from mlservice.replicate.problems import RECORD_STATE
from mlservice.security.limits import limit_submissions
from mlservice.users.auth import TokenUser

# Every way /api authenticates (a JWT or an API key in the Authorization header) but the web UI's
# cookie: /v1 has no CSRF check, and Replicate's clients only ever send a token.
ApiUser = TokenUser


async def limit_v1_submissions(request: Request, user: ApiUser) -> None:
    """The submission rate limit of /api, counted for the token's user (one count for both APIs)."""
    await limit_submissions(request, user)


async def prediction_record(request: Request, user: ApiUser) -> RequestRecord:
    """The request-history record of this prediction request: written by
    :class:`~mlservice.replicate.problems.ReplicateRoute` if the request is refused, by the submit
    with the job if not."""
    record = RequestRecord(user_id=user.id, request_id=request_id_of(request))
    name = request.path_params.get("name")
    if isinstance(name, str):
        record.model_slug = name[:MAX_SLUG_LENGTH]
    setattr(request.state, RECORD_STATE, record)
    return record


PredictionRecord = Annotated[RequestRecord, Depends(prediction_record)]
PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="`wait` (60 s) or `wait=N` (1 to 60 s): answer once the prediction finishes, or when "
        "the wait ends (then with status `starting`, as Replicate does)",
    ),
]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]
CancelAfterHeader = Annotated[
    str | None,
    Header(
        alias="Cancel-After",
        description="A deadline such as `30s`, `5m` or `1h30m`: still waiting then, the prediction is "
        "`aborted` (it costs nothing); running, it is `canceled`",
    ),
]
Limit = Annotated[int | None, Query(ge=1, le=PAGE_SIZE, description="Page size (not in Replicate)")]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")
