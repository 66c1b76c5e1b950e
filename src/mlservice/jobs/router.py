from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, Response, UploadFile, status
from fastapi.responses import JSONResponse

from mlservice.deps import ComponentsDep, OffsetQuery, SessionDep
from mlservice.errors import error_responses
from mlservice.history.dependencies import PredictionRequestDep
from mlservice.jobs import service, usecases
from mlservice.jobs.errors import FileTooLarge
from mlservice.jobs.prefer import MAX_WAIT_S, cancel_after_seconds, wait_seconds
from mlservice.jobs.schemas import JobPage, JobRead
from mlservice.jobs.sse import STREAM_RESPONSE, ServerSentEvent, event_stream
from mlservice.jobs.streams import state_token, watch_job
from mlservice.jobs.tables import JobStatus
from mlservice.jobs.validation import Submission
from mlservice.jobs.views import job_read, job_summary
from mlservice.security.limits import RATE_LIMITED_RESPONSE, limit_submissions
from mlservice.users.auth import CurrentUser, LinkOrCurrentUser, account_checked_by_write
from mlservice.webhooks.service import subscription

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=error_responses(401))

_CHUNK = 1024 * 1024


async def read_upload(upload: UploadFile | None, max_bytes: int) -> bytes | None:
    """The upload's bytes, refusing anything over ``max_bytes`` without reading it all."""
    if upload is None:
        return None
    chunks: list[bytes] = []
    size = 0
    while chunk := await upload.read(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise FileTooLarge(f"The file is larger than the limit of {max_bytes} bytes.", limit=max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "",
    response_model=JobRead,
    status_code=status.HTTP_201_CREATED,
    # 400 a malformed Idempotency-Key or Prefer, 402 not enough credits, 404 no such model, 409 model
    # disabled, 413/415 an upload too large or of the wrong type, 503 the model is not installed here.
    responses={**error_responses(400, 402, 404, 409, 413, 415, 503), **RATE_LIMITED_RESPONSE},
    dependencies=[Depends(account_checked_by_write), Depends(limit_submissions)],
)
async def submit_job(
    user: CurrentUser,
    components: ComponentsDep,
    record: PredictionRequestDep,
    model: Annotated[str, Form(description="Catalog slug of the model to run")],
    file: Annotated[UploadFile | None, File(description="Input file for image/file models")] = None,
    text: Annotated[str | None, Form(description="Input text for text models")] = None,
    params: Annotated[
        str | None, Form(description='Model parameters as a JSON object, e.g. {"top_k": 3}')
    ] = None,
    webhook: Annotated[
        str | None, Form(description="URL to POST signed news of the job to (see GET /api/webhooks/secret)")
    ] = None,
    webhook_events_filter: Annotated[
        list[str] | None,
        Form(description="Events to send: start, output, logs, completed (repeated or comma-separated; all)"),
    ] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    prefer: Annotated[
        str | None,
        Header(
            alias="Prefer",
            description=f"`wait` ({MAX_WAIT_S} s) or `wait=N` (1 to {MAX_WAIT_S} s): answer once the job "
            "finishes, or when the wait ends",
        ),
    ] = None,
    cancel_after: Annotated[
        str | None,
        Header(
            alias="Cancel-After",
            description="A deadline such as `30s`, `5m` or `1h30m`: still queued then, the job is "
            "`aborted` (it costs nothing); running, it is `canceled`",
        ),
    ] = None,
) -> JSONResponse:
    """Submit a job: the model's price is held now and charged only if the job succeeds.

    With `Prefer: wait=N` the answer comes once the job finished, or when the N seconds are over:
    still `201`, with the job as it is then (`succeeded`, `failed`, or still `queued`/`running`,
    to be polled with `GET /api/jobs/{id}?wait=N`), and `Preference-Applied: wait=N`. An
    idempotent replay with it waits for the first request's job the same way."""
    wait_s = wait_seconds(prefer)  # a malformed Prefer is refused before anything is charged
    deadline_s = cancel_after_seconds(cancel_after)
    settings = components.settings
    submission = Submission(
        model_slug=model,
        raw_params=params,
        data=await read_upload(file, settings.max_upload_bytes),
        filename=file.filename if file else None,
        text=text,
        cancel_after_s=deadline_s,
    )
    record.describe(submission)
    hook = subscription(webhook, webhook_events_filter, allow_private=settings.webhook_allow_private)
    if wait_s is None:
        outcome = await usecases.submit_job(
            components,
            user_id=user.id,
            submission=submission,
            record=record,
            idempotency_key=idempotency_key,
            webhook=hook,
        )
        # Committed above, before the response goes out.
        return JSONResponse(outcome.body, outcome.status_code, headers=outcome.headers())
    outcome, job = await usecases.submit_and_wait(
        components,
        user_id=user.id,
        submission=submission,
        record=record,
        wait_s=wait_s,
        idempotency_key=idempotency_key,
        webhook=hook,
    )
    headers = outcome.headers() | {"Preference-Applied": f"wait={int(wait_s)}"}
    return JSONResponse(job_read(job).model_dump(mode="json"), outcome.status_code, headers=headers)


@router.get("", response_model=JobPage)
async def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: OffsetQuery = 0,
    status: JobStatus | None = None,
    model: str | None = None,
) -> JobPage:
    """Your jobs, newest first, without inputs or results."""
    page = await service.list_jobs(
        session, user.id, limit=limit, offset=offset, status=status, model_slug=model
    )
    return JobPage(items=[job_summary(j) for j in page.items], total=page.total, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobRead, responses=error_responses(404))
async def get_job(
    job_id: uuid.UUID,
    user: CurrentUser,
    components: ComponentsDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Seconds to wait for the job to finish before answering (long polling); 0: at once",
        ),
    ] = 0,
) -> Response:
    """The job with its result; with ``wait``, answered as soon as it finishes (or when the wait ends)."""
    job = await usecases.wait_for_job(components, user.id, job_id, wait)
    return Response(job_read(job).model_dump_json(), media_type="application/json")


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={**STREAM_RESPONSE, **error_responses(404, 429)},
)
async def job_events(
    job_id: uuid.UUID,
    user: CurrentUser,
    components: ComponentsDep,
    last_event_id: Annotated[
        str | None,
        Header(alias="Last-Event-ID", description="The `id` of the last event you had (a reconnect)"),
    ] = None,
) -> Response:
    """The job's changes as server-sent events: `event: job`, the job as `GET /api/jobs/{id}` shows
    it in `data`, a token of its state in `id`. First the job as it is now, then each change of its
    status or progress; the stream ends after a final state. With `Last-Event-ID` a reconnect is not
    sent the state it already had (`204` once that state was final). `429 too_many_streams` past the
    open streams one user may have (`MLSERVICE_MAX_STREAMS_PER_USER`)."""
    job = await usecases.read_job(components, user.id, job_id)  # 404 before anything is streamed
    if JobStatus(job.status).finished and last_event_id == state_token(job):
        return Response(status_code=status.HTTP_204_NO_CONTENT)  # EventSource stops reconnecting
    slot = components.streams.open(user.id)
    events = (
        ServerSentEvent(data=job_read(seen).model_dump_json(), event="job", id=state_token(seen))
        async for seen in watch_job(components, user.id, job_id, seen=last_event_id)
    )
    return event_stream(slot, events)


@router.post("/{job_id}/cancel", response_model=JobRead, responses=error_responses(404, 409))
async def cancel_job(
    job_id: uuid.UUID, user: CurrentUser, session: SessionDep, components: ComponentsDep
) -> JobRead:
    # The read connection goes back before the write waits for the writer (see deps).
    await session.close()
    return job_read(await usecases.cancel_job(components, user.id, job_id))


def _attachment(stored: service.StoredFile) -> Response:
    return Response(
        stored.data,
        media_type=stored.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{stored.filename}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


@router.get("/{job_id}/input", response_class=Response, responses=error_responses(404, 410))
async def download_input(
    job_id: uuid.UUID, user: CurrentUser, session: SessionDep, components: ComponentsDep
) -> Response:
    """The file you uploaded, as an attachment and opaque bytes (never rendered inline); `410
    files_expired` once the job's files expired (see the job's `files_expired_at`)."""
    return _attachment(await service.read_input(session, components.storage, user.id, job_id))


@router.get("/{job_id}/artifacts/{name}", response_class=Response, responses=error_responses(403, 404, 410))
async def download_artifact(
    job_id: uuid.UUID, name: str, user: LinkOrCurrentUser, session: SessionDep, components: ComponentsDep
) -> Response:
    """A file the job produced (e.g. the cut-out PNG of a background removal); `410 files_expired`
    once the job's files expired. Its owner's credential, or a link from a `/v1` prediction's
    output (`?token=`), which opens it for an hour (`403 invalid_link` once expired)."""
    return _attachment(await service.read_artifact(session, components.storage, user.id, job_id, name))
