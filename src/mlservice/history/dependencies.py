"""The request-history record of a ``POST /api/jobs`` request, as a request dependency: the submit use
case records what it accepts and refuses; this records the refusals that come before it (a form
that fails validation, an upload over the limit, a rate limit)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import UploadFile

from mlservice.deps import components_of
from mlservice.history.recording import MAX_SLUG_LENGTH, RequestRecord
from mlservice.history.usecases import record_refusal
from mlservice.observability.context import current_request_id, valid_request_id
from mlservice.users.auth import CurrentUser


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
        await record_refusal(components_of(request).db, record, exc)
        raise


# scope="function": the refusal is recorded before its error response goes out.
PredictionRequestDep = Annotated[RequestRecord, Depends(prediction_request, scope="function")]
