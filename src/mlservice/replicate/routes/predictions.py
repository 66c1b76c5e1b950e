"""``/v1/predictions`` and ``/v1/models/{owner}/{name}/predictions``: run a model, read, list and
cancel your predictions (every job, whichever API made it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.responses import JSONResponse

from mlservice.deps import ComponentsDep, SessionDep
from mlservice.history.recording import MAX_SLUG_LENGTH, RequestRecord
from mlservice.jobs import service as jobs
from mlservice.jobs import usecases
from mlservice.jobs.prediction_view import prediction_of
from mlservice.jobs.prefer import cancel_after_seconds, wait_seconds
from mlservice.jobs.sse import STREAM_RESPONSE, ServerSentEvent, event_stream
from mlservice.jobs.streams import state_token, watch_job
from mlservice.jobs.tables import Job, JobStatus
from mlservice.replicate import predictions
from mlservice.replicate.pages import PAGE_SIZE, page_url
from mlservice.replicate.problems import RECORD_STATE, ReplicateRoute, problems
from mlservice.replicate.routes.dependencies import (
    ApiUser,
    CancelAfterHeader,
    IdempotencyKey,
    Limit,
    PredictionRecord,
    PreferHeader,
    base_url,
    limit_v1_submissions,
)
from mlservice.replicate.schemas import (
    Prediction,
    PredictionCreate,
    PredictionPage,
    VersionedPredictionCreate,
)
from mlservice.replicate.versions import slug_of_owner_name, slug_of_version
from mlservice.users.auth import LinkOrTokenUser, account_checked_by_write
from mlservice.users.principals import Principal

router = APIRouter(tags=["replicate"], route_class=ReplicateRoute, responses=problems(401, 422))


async def _create(
    request: Request,
    *,
    user: Principal,
    session: SessionDep,
    components: ComponentsDep,
    record: RequestRecord,
    slug: str,
    body: PredictionCreate,
    prefer: str | None,
    idempotency_key: str | None,
    cancel_after: str | None,
) -> JSONResponse:
    wait_s = wait_seconds(prefer)
    deadline_s = cancel_after_seconds(cancel_after)
    base = base_url(request)
    record.model_slug = slug[:MAX_SLUG_LENGTH]
    job_id = await predictions.submit_prediction(
        session,
        components,
        user_id=user.id,
        slug=slug,
        body=body,
        record=record,
        idempotency_key=idempotency_key,
        base_url=base,
        cancel_after_s=deadline_s,
    )
    setattr(request.state, RECORD_STATE, None)  # accepted and recorded: what follows is no refusal
    job = await predictions.prediction_job(components, user.id, job_id, wait_s)
    # A create's answer says `starting` for a job that has not finished, as Replicate's does (a
    # worker may have picked it up already): its clients poll on from there.
    prediction = prediction_of(job, components.predictors, base, components.links, waited_out=True)
    headers = {"Location": prediction.urls["get"]}
    if wait_s is not None:
        headers["Preference-Applied"] = f"wait={int(wait_s)}"
    return JSONResponse(prediction.model_dump(mode="json"), status.HTTP_201_CREATED, headers=headers)


# 400 a bad Prefer or Idempotency-Key, 402 not enough credits, 404 no such model or version, 409 model
# disabled, 413/415 a file too large or of the wrong type, 429 rate limited, 503 model not installed here.
_CREATE_ERRORS = problems(400, 402, 404, 409, 413, 415, 429, 503)


@router.post(
    "/predictions",
    response_model=Prediction,
    status_code=status.HTTP_201_CREATED,
    responses=_CREATE_ERRORS,
    dependencies=[Depends(account_checked_by_write), Depends(limit_v1_submissions)],
)
async def create_prediction(
    request: Request,
    body: VersionedPredictionCreate,
    user: ApiUser,
    session: SessionDep,
    components: ComponentsDep,
    record: PredictionRecord,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKey = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    """Run a model: `version` is a version id, `mlservice/<model>`, `mlservice/<model>:<version>` or a
    model's slug. Billed exactly as `POST /api/jobs`: the price is held now, charged on success."""
    record.model_slug = body.version[:MAX_SLUG_LENGTH]
    slug = slug_of_version(body.version, components.predictors)
    return await _create(
        request,
        user=user,
        session=session,
        components=components,
        record=record,
        slug=slug,
        body=body,
        prefer=prefer,
        idempotency_key=idempotency_key,
        cancel_after=cancel_after,
    )


@router.post(
    "/models/{owner}/{name}/predictions",
    response_model=Prediction,
    status_code=status.HTTP_201_CREATED,
    responses=_CREATE_ERRORS,
    dependencies=[Depends(account_checked_by_write), Depends(limit_v1_submissions)],
)
async def create_model_prediction(
    request: Request,
    owner: str,
    name: str,
    body: PredictionCreate,
    user: ApiUser,
    session: SessionDep,
    components: ComponentsDep,
    record: PredictionRecord,
    prefer: PreferHeader = None,
    idempotency_key: IdempotencyKey = None,
    cancel_after: CancelAfterHeader = None,
) -> JSONResponse:
    """Run the latest version of `mlservice/<name>`."""
    return await _create(
        request,
        user=user,
        session=session,
        components=components,
        record=record,
        slug=slug_of_owner_name(owner, name),
        body=body,
        prefer=prefer,
        idempotency_key=idempotency_key,
        cancel_after=cancel_after,
    )


@router.get("/predictions", response_model=PredictionPage, responses=problems(400))
async def list_predictions(
    request: Request,
    user: ApiUser,
    session: SessionDep,
    components: ComponentsDep,
    cursor: str | None = None,
    limit: Limit = None,
) -> PredictionPage:
    """Your predictions (every job, whichever API made it), newest first."""
    page = await predictions.list_predictions(
        session, user.id, predictions.Cursor.decode(cursor) if cursor else None, limit or PAGE_SIZE
    )
    base = base_url(request)
    return PredictionPage(
        previous=page_url(base, "/v1/predictions", page.previous.encode() if page.previous else None, limit),
        next=page_url(base, "/v1/predictions", page.next.encode() if page.next else None, limit),
        results=[prediction_of(job, components.predictors, base, components.links) for job in page.jobs],
    )


@router.get("/predictions/{prediction_id}", response_model=Prediction, responses=problems(404))
async def get_prediction(
    request: Request, prediction_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Prediction:
    job = await jobs.get_owned_job(session, user.id, predictions.parse_prediction_id(prediction_id))
    return prediction_of(job, components.predictors, base_url(request), components.links)


def _final_events(job: Job, components: ComponentsDep, base: str) -> list[ServerSentEvent]:
    """Replicate's events for a finished prediction: its log lines, its output or its error, done."""
    prediction = prediction_of(job, components.predictors, base, components.links)
    token = state_token(job)
    events = [ServerSentEvent(data=line, event="logs") for line in prediction.logs.splitlines()]
    status = JobStatus(job.status)
    if status is JobStatus.succeeded:
        events.append(ServerSentEvent(data=json.dumps(prediction.output), event="output"))
    elif status is JobStatus.failed:
        events.append(ServerSentEvent(data=prediction.error or "prediction failed", event="error"))
    reason = {JobStatus.canceled: "canceled", JobStatus.aborted: "aborted", JobStatus.failed: "error"}
    done = {"reason": reason[status]} if status in reason else {}
    events.append(ServerSentEvent(data=json.dumps(done), event="done"))
    # Replicate's clients take only events with an id.
    for number, event in enumerate(events):
        event.id = f"{token}-{number}"
    return events


@router.get(
    "/predictions/{prediction_id}/stream",
    response_class=Response,
    responses=STREAM_RESPONSE | problems(403, 404, 429),
)
async def stream_prediction(
    request: Request, prediction_id: str, user: LinkOrTokenUser, components: ComponentsDep
) -> Response:
    """The prediction's events as Replicate streams them (`urls.stream`): once it finished, its log
    lines (`logs`), then `output` (the output as JSON) or `error` (its message), then `done` (`{}`,
    or `{"reason": "canceled"}`, `"aborted"`, `"error"`). Keep-alive comments meanwhile. Its owner's
    token, or `urls.stream` as given (with `?token=`, no credential needed: Replicate's clients
    send none there)."""
    job_id = predictions.parse_prediction_id(prediction_id)
    await usecases.read_job(components, user.id, job_id)  # 404 before anything is streamed
    slot = components.streams.open(user.id)
    base = base_url(request)

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for job in watch_job(components, user.id, job_id):
            if JobStatus(job.status).finished:
                for event in _final_events(job, components, base):
                    yield event

    return event_stream(slot, events())


@router.post("/predictions/{prediction_id}/cancel", response_model=Prediction, responses=problems(404, 409))
async def cancel_prediction(
    request: Request, prediction_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Prediction:
    """Cancel a prediction, queued or running: it is `canceled` at once and its hold released
    (whatever a running model still returns is dropped). A finished one is answered as it is."""
    job_id = predictions.parse_prediction_id(prediction_id)
    await session.close()
    job = await usecases.cancel_job(components, user.id, job_id, finished_is_an_answer=True)
    return prediction_of(job, components.predictors, base_url(request), components.links)
