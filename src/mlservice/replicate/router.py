"""``/v1``: Replicate's HTTP API, so that its clients (``replicate.Client(base_url=...)``) run our
models. Authenticated like ``/api`` but by bearer token only (a JWT or an API key); errors are
Replicate's problem details with our stable code beside them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, Response, UploadFile, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi_users.authentication import AuthenticationBackend, CookieTransport
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlservice.catalog.service import get_runnable_model, list_models
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import AppError
from mlservice.history.recording import MAX_SLUG_LENGTH, RequestRecord, record_refusal, request_id_of
from mlservice.jobs import service as jobs
from mlservice.jobs.errors import JobNotCancelable
from mlservice.jobs.prediction_view import prediction_of
from mlservice.jobs.router import read_upload
from mlservice.jobs.tables import JobStatus
from mlservice.observability.context import note_user
from mlservice.predictors.base import InvalidInput
from mlservice.replicate import service
from mlservice.replicate.errors import VersionNotFound
from mlservice.replicate.schemas import (
    FilePage,
    FileRead,
    Model,
    ModelPage,
    ModelVersion,
    Prediction,
    PredictionCreate,
    PredictionPage,
    Problem,
    VersionedPredictionCreate,
    VersionPage,
)
from mlservice.security.limits import limit_submissions
from mlservice.users.auth import fastapi_users
from mlservice.users.tables import User

# -- errors as Replicate answers them ---------------------------------------------------------------

_HTTP_CODES = {
    401: ("not_authenticated", "Authentication required: send `Authorization: Bearer <token or API key>`."),
    403: ("forbidden", "You are not allowed to do this."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
}


def _problem_parts(exc: Exception) -> tuple[int, str, str, dict[str, Any]] | None:
    if isinstance(exc, AppError):
        return exc.status_code, exc.code, exc.message, exc.details
    if isinstance(exc, InvalidInput):
        return exc.status_code, exc.code, exc.message, {}
    if isinstance(exc, RequestValidationError):
        fields = [
            {"field": ".".join(str(p) for p in err["loc"] if p != "body"), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{f['field'] or 'request'}: {f['message']}" for f in fields)
        return 422, "validation_error", f"Invalid request: {summary}", {"fields": fields}
    if isinstance(exc, StarletteHTTPException):
        detail = exc.detail
        if isinstance(detail, dict) and "code" in detail:  # fastapi-users, the body limit
            reason = detail.get("reason")
            return exc.status_code, str(detail["code"]).lower(), str(reason or detail["code"]), {}
        code, message = _HTTP_CODES.get(exc.status_code, (f"http_{exc.status_code}", str(detail)))
        return exc.status_code, code, message, {}
    return None


def problem_response(exc: Exception) -> JSONResponse | None:
    """Replicate's error body (``title``, ``status``, ``detail``: what its clients read) with our
    ``code`` and details; None for an exception that is a bug (left to the 500 handler)."""
    parts = _problem_parts(exc)
    if parts is None:
        return None
    status_code, code, message, details = parts
    body: dict[str, Any] = {
        "title": HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": message,
        "code": code,
    }
    if details:
        body["details"] = details
    headers = dict(exc.headers or {}) if isinstance(exc, AppError | StarletteHTTPException) else {}
    return JSONResponse(body, status_code=status_code, headers=headers)


_RECORD = "replicate_prediction_record"


class ReplicateRoute(APIRoute):
    """A ``/v1`` route: its errors, those of its dependencies (authentication, rate limits) and of
    request validation included, are answered in Replicate's shape, and a refused prediction
    request is written to the request history as ``POST /api/jobs`` writes it.

    The errors are turned into answers inside the route, so dependencies with ``yield`` see no
    exception: a ``/v1`` route opens its write transactions itself, never through ``WriteSessionDep``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as exc:
                problem = problem_response(exc)
                if problem is None:
                    raise
                record: RequestRecord | None = getattr(request.state, _RECORD, None)
                if record is not None:
                    await _describe_refused(record, request)
                    await record_refusal(request.app.state.components.db, record, exc)
                response = problem
            # What /api answers get from the security headers: tokens and account data stay out of caches.
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return answer


async def _describe_refused(record: RequestRecord, request: Request) -> None:
    """Name the model of a request refused before it was read (e.g. a body that failed validation)."""
    if record.model_slug is not None:
        return
    try:
        body = await request.json()
    except Exception:  # no body, not JSON, or over the size limit: nothing to name
        return
    version = body.get("version") if isinstance(body, dict) else None
    if isinstance(version, str):
        record.model_slug = version[:MAX_SLUG_LENGTH]


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem, "description": HTTPStatus(code).phrase} for code in codes}


router = APIRouter(prefix="/v1", tags=["replicate"], route_class=ReplicateRoute, responses=problems(401, 422))


# -- dependencies -----------------------------------------------------------------------------------


def _token_backends() -> list[AuthenticationBackend[User, uuid.UUID]]:
    return [b for b in fastapi_users.authenticator.backends if not isinstance(b.transport, CookieTransport)]


# Every way /api authenticates (a JWT or an API key in the Authorization header) but the web UI's
# cookie: /v1 has no CSRF check, and Replicate's clients only ever send a token.
_token_user = fastapi_users.current_user(active=True, get_enabled_backends=_token_backends)


async def bearer_user(user: Annotated[User, Depends(_token_user)]) -> User:
    note_user(user.id)  # the request's log event names its user
    return user


ApiUser = Annotated[User, Depends(bearer_user)]


async def limit_v1_submissions(request: Request, user: ApiUser) -> None:
    """The submission rate limit of /api, counted for the token's user (one count for both APIs)."""
    await limit_submissions(request, user)


async def prediction_record(request: Request, user: ApiUser) -> RequestRecord:
    """The request-history record of this prediction request; :class:`ReplicateRoute` writes it if
    the request is refused, the submit writes it with the job if not."""
    record = RequestRecord(user_id=user.id, request_id=request_id_of(request))
    name = request.path_params.get("name")
    if isinstance(name, str):
        record.model_slug = name[:MAX_SLUG_LENGTH]
    setattr(request.state, _RECORD, record)
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
Limit = Annotated[int | None, Query(ge=1, le=service.PAGE_SIZE, description="Page size (not in Replicate)")]


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- predictions ------------------------------------------------------------------------------------


async def _create(
    request: Request,
    *,
    user: User,
    session: SessionDep,
    components: ComponentsDep,
    record: RequestRecord,
    slug: str,
    body: PredictionCreate,
    prefer: str | None,
    idempotency_key: str | None,
) -> JSONResponse:
    wait_s = service.wait_seconds(prefer)
    base = base_url(request)
    record.model_slug = slug[:MAX_SLUG_LENGTH]
    job_id = await service.submit_prediction(
        session,
        components,
        user_id=user.id,
        slug=slug,
        body=body,
        record=record,
        idempotency_key=idempotency_key,
        base_url=base,
    )
    setattr(request.state, _RECORD, None)  # accepted and recorded: what follows is no refusal
    job = await service.prediction_job(components, user.id, job_id, wait_s)
    prediction = prediction_of(job, components.predictors, base, waited_out=wait_s is not None)
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
    dependencies=[Depends(limit_v1_submissions)],
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
) -> JSONResponse:
    """Run a model: `version` is a version id, `mlservice/<model>`, `mlservice/<model>:<version>` or a
    model's slug. Billed exactly as `POST /api/jobs`: the price is held now, charged on success."""
    record.model_slug = body.version[:MAX_SLUG_LENGTH]
    slug = service.slug_of_version(body.version, components.predictors)
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
    )


@router.post(
    "/models/{owner}/{name}/predictions",
    response_model=Prediction,
    status_code=status.HTTP_201_CREATED,
    responses=_CREATE_ERRORS,
    dependencies=[Depends(limit_v1_submissions)],
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
) -> JSONResponse:
    """Run the latest version of `mlservice/<name>`."""
    return await _create(
        request,
        user=user,
        session=session,
        components=components,
        record=record,
        slug=service.slug_of_owner_name(owner, name),
        body=body,
        prefer=prefer,
        idempotency_key=idempotency_key,
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
    page = await service.list_predictions(
        session, user.id, service.Cursor.decode(cursor) if cursor else None, limit or service.PAGE_SIZE
    )
    base = base_url(request)
    return PredictionPage(
        previous=service.page_url(
            base, "/v1/predictions", page.previous.encode() if page.previous else None, limit
        ),
        next=service.page_url(base, "/v1/predictions", page.next.encode() if page.next else None, limit),
        results=[prediction_of(job, components.predictors, base) for job in page.jobs],
    )


@router.get("/predictions/{prediction_id}", response_model=Prediction, responses=problems(404))
async def get_prediction(
    request: Request, prediction_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Prediction:
    job = await jobs.get_owned_job(session, user.id, service.parse_prediction_id(prediction_id))
    return prediction_of(job, components.predictors, base_url(request))


@router.post("/predictions/{prediction_id}/cancel", response_model=Prediction, responses=problems(404, 409))
async def cancel_prediction(
    request: Request, prediction_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Prediction:
    """Cancel a prediction that has not started (its hold is released). A finished one is answered
    as it is; one that is running cannot be stopped here (409)."""
    job_id = service.parse_prediction_id(prediction_id)
    await session.close()
    async with components.db.session(write=True) as write:
        try:
            job = await jobs.cancel(write, user.id, job_id)
        except JobNotCancelable:
            job = await jobs.get_owned_job(write, user.id, job_id)
            if not JobStatus(job.status).finished:
                raise
    return prediction_of(job, components.predictors, base_url(request))


# -- models -----------------------------------------------------------------------------------------


@router.get("/models", response_model=ModelPage, responses=problems(400))
async def list_models_page(
    request: Request,
    user: ApiUser,
    session: SessionDep,
    components: ComponentsDep,
    cursor: str | None = None,
    limit: Limit = None,
) -> ModelPage:
    """The models you can run, with their price per run in credits."""
    size = limit or service.PAGE_SIZE
    offset = service.offset_of(cursor)
    rows = await list_models(session)
    counts = await service.run_counts(session, user.id)
    base = base_url(request)
    page = rows[offset : offset + size]
    previous = str(max(offset - size, 0)) if offset else None
    following = str(offset + size) if offset + size < len(rows) else None
    return ModelPage(
        previous=service.page_url(base, "/v1/models", previous, limit),
        next=service.page_url(base, "/v1/models", following, limit),
        results=[service.model_of(m, components.predictors, base, counts.get(m.slug, 0)) for m in page],
    )


@router.get("/models/{owner}/{name}", response_model=Model, responses=problems(404, 409))
async def get_model(
    request: Request, owner: str, name: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Model:
    row = await get_runnable_model(session, service.slug_of_owner_name(owner, name))
    counts = await service.run_counts(session, user.id)
    return service.model_of(row, components.predictors, base_url(request), counts.get(row.slug, 0))


@router.get("/models/{owner}/{name}/versions", response_model=VersionPage, responses=problems(404, 409))
async def list_versions(
    owner: str, name: str, _: ApiUser, session: SessionDep, components: ComponentsDep
) -> VersionPage:
    """A model here has one version, the installed one."""
    row = await get_runnable_model(session, service.slug_of_owner_name(owner, name))
    cls = service.installed(row.slug, components.predictors)
    return VersionPage(previous=None, next=None, results=[service.model_version(cls, row)])


@router.get(
    "/models/{owner}/{name}/versions/{version_id}", response_model=ModelVersion, responses=problems(404, 409)
)
async def get_version(
    owner: str, name: str, version_id: str, _: ApiUser, session: SessionDep, components: ComponentsDep
) -> ModelVersion:
    row = await get_runnable_model(session, service.slug_of_owner_name(owner, name))
    cls = service.installed(row.slug, components.predictors)
    version = service.model_version(cls, row)
    if version.id != version_id:
        raise VersionNotFound(f"The model {owner}/{name} has no version {version_id!r}.")
    return version


# -- files ------------------------------------------------------------------------------------------


@router.post(
    "/files",
    response_model=FileRead,
    status_code=status.HTTP_201_CREATED,
    responses=problems(400, 409, 413, 429),
    dependencies=[Depends(limit_v1_submissions)],
)
async def create_file(
    request: Request,
    user: ApiUser,
    session: SessionDep,
    components: ComponentsDep,
    content: Annotated[UploadFile, File(description="The file")],
    filename: Annotated[str | None, Form(max_length=255)] = None,
    type: Annotated[str | None, Form(max_length=255, description="Its media type")] = None,
    metadata: Annotated[str | None, Form(description="A JSON object kept with the file")] = None,
) -> FileRead:
    """Upload a file to give to predictions by its `urls.get`; only you can read or use it, and it
    expires after a day. The upload limit is that of `POST /api/jobs`."""
    data = await read_upload(content, components.settings.max_upload_bytes)
    assert data is not None
    meta = service.parse_metadata(metadata)
    await session.close()
    async with components.db.session(write=True) as write:
        row = await service.create_upload(
            write,
            components.storage,
            user.id,
            data=data,
            name=filename or content.filename or "file",
            content_type=type or content.content_type or "application/octet-stream",
            metadata=meta,
        )
    return service.file_of(row, base_url(request))


@router.get("/files", response_model=FilePage)
async def list_files(request: Request, user: ApiUser, session: SessionDep) -> FilePage:
    """Your files that have not expired, newest first (all of them: there are at most a hundred)."""
    rows = await service.list_uploads(session, user.id)
    base = base_url(request)
    return FilePage(previous=None, next=None, results=[service.file_of(r, base) for r in rows])


@router.get("/files/{file_id}", response_model=FileRead, responses=problems(404))
async def get_file(request: Request, file_id: str, user: ApiUser, session: SessionDep) -> FileRead:
    return service.file_of(await service.get_upload(session, user.id, file_id), base_url(request))


@router.get("/files/{file_id}/download", response_class=Response, responses=problems(404))
async def download_file(
    file_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Response:
    """The file's bytes, as an attachment and opaque bytes (never rendered inline)."""
    row, data = await service.read_upload(session, components.storage, user.id, file_id)
    filename = "".join(c for c in row.name if c.isalnum() or c in "._-")[:100] or "file"
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


@router.delete(
    "/files/{file_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=problems(404),
)
async def delete_file(
    file_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Response:
    await session.close()
    async with components.db.session(write=True) as write:
        await service.delete_upload(write, components.storage, user.id, file_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- account ----------------------------------------------------------------------------------------


@router.get("/account")
async def get_account(user: ApiUser) -> dict[str, Any]:
    """Who the token belongs to (Replicate's clients use it to check a token)."""
    return {"type": "user", "username": user.email, "name": user.email, "github_url": None}
