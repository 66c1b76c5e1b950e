"""The signed-in user's pages: the model catalog, a submit page per model, jobs, wallet, faces.

Pages read through the services, as the API does; what a page changes in the browser goes either
through the JSON API from ``app.js`` (job submission: rate limits, request history and idempotency
apply exactly as for any client) or through a small form route here (top-up, cancel, face delete),
each checked against the CSRF cookie.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from mlservice.catalog import service as catalog
from mlservice.catalog.tables import CatalogModel
from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import AppError
from mlservice.faces import service as faces
from mlservice.faces import usecases as face_usecases
from mlservice.faces.service import FaceNotFound
from mlservice.jobs import service as jobs
from mlservice.jobs import usecases
from mlservice.jobs.errors import JobNotCancelable, JobNotFound
from mlservice.jobs.tables import Job, JobStatus
from mlservice.jobs.validation import MAX_TEXT_LENGTH
from mlservice.jobs.views import job_read, job_summary
from mlservice.web.csrf import check_csrf
from mlservice.web.deps import PageUser, PageWallet
from mlservice.web.param_form import param_fields
from mlservice.web.render import page, redirect
from mlservice.web.results import job_result_view

router = APIRouter(include_in_schema=False)

PER_PAGE = 20
# Far past anything a person pages through; keeps the offset inside what the databases take.
MAX_PAGE = 1_000_000
PageNumber = Annotated[int, Query(alias="page", ge=1, le=MAX_PAGE)]
CsrfField = Annotated[str | None, Form(alias="csrf_token")]

# Upload types a browser shows in <img>: an image job's input is served inline only as one of
# these (by the format the server decoded at submit), never with a type taken from the upload.
INLINE_IMAGE_TYPES = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
}
# What the file pickers offer: the formats the image models accept.
IMAGE_ACCEPT = "image/jpeg,image/png,image/webp,image/gif,image/bmp,image/tiff"


@dataclass(frozen=True)
class Pager:
    """Where a listing is: page ``number`` of ``per_page`` items among ``total``."""

    number: int
    per_page: int
    total: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def _pager(number: int, total: int = 0) -> Pager:
    return Pager(number, PER_PAGE, total)


def _parse_id(value: str, not_found: AppError) -> uuid.UUID:
    # Path ids are parsed here rather than typed as UUID: a malformed one is a 404 page, like an
    # unknown one, not a validation error.
    try:
        return uuid.UUID(value)
    except ValueError:
        raise not_found from None


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, user: PageUser, wallet: PageWallet, session: SessionDep) -> Response:
    models = await catalog.list_models(session)
    return page(request, "home.html", user=user, wallet=wallet, nav="home", models=models)


# -- running a model -------------------------------------------------------------------------------


@router.get("/models/{slug}", response_class=HTMLResponse)
async def model_page(
    request: Request,
    slug: str,
    user: PageUser,
    wallet: PageWallet,
    session: SessionDep,
    components: ComponentsDep,
) -> Response:
    model = await catalog.get_model(session, slug)
    predictor = components.predictors.get(model.slug)
    if not model.enabled or predictor is None:
        raise catalog.ModelNotFound(f"The model {slug!r} is not available.")
    gallery_size = None
    if model.task == "face-identification":
        gallery_size = (await faces.list_faces(session, user.id, limit=1, offset=0)).total
    settings = components.settings
    return page(
        request,
        "model.html",
        user=user,
        wallet=wallet,
        nav="home",
        model=model,
        fields=param_fields(predictor.params_model),
        accept=IMAGE_ACCEPT if model.input_kind == "image" else "",
        max_upload_bytes=settings.max_upload_bytes,
        max_upload_mb=round(settings.max_upload_bytes / 1024 / 1024, 1),
        max_text_length=MAX_TEXT_LENGTH,
        gallery_size=gallery_size,
    )


# -- jobs ------------------------------------------------------------------------------------------


async def _titles(session: SessionDep) -> dict[str, str]:
    return {m.slug: m.title for m in await catalog.list_models(session, include_disabled=True)}


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request, user: PageUser, wallet: PageWallet, session: SessionDep, number: PageNumber = 1
) -> Response:
    pager = _pager(number)
    listing = await jobs.list_jobs(session, user.id, limit=PER_PAGE, offset=pager.offset)
    return page(
        request,
        "jobs.html",
        user=user,
        wallet=wallet,
        nav="jobs",
        jobs=[job_summary(job) for job in listing.items],
        titles=await _titles(session),
        pager=_pager(number, listing.total),
    )


def _inline_image_type(job: Job, model: CatalogModel) -> str | None:
    if model.input_kind != "image" or job.input_file is None:
        return None
    return INLINE_IMAGE_TYPES.get(str(job.input_meta.get("format")))


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request, job_id: str, user: PageUser, wallet: PageWallet, session: SessionDep
) -> Response:
    job = await jobs.get_owned_job(session, user.id, _parse_id(job_id, JobNotFound("Job not found.")))
    model = await catalog.get_model(session, job.model_slug)
    read = job_read(job)
    # Expired files are not linked at all: the page says so instead of showing broken images.
    image_url = (
        f"/jobs/{job.id}/input-image"
        if _inline_image_type(job, model) and read.files_expired_at is None
        else None
    )
    return page(
        request,
        "job.html",
        user=user,
        wallet=wallet,
        nav="jobs",
        job=read,
        model=model,
        finished=JobStatus(job.status).finished,
        image_url=image_url,
        result=job_result_view(model.task, job.output, job.input_meta),
    )


@router.get("/jobs/{job_id}/input-image")
async def job_input_image(
    job_id: str, user: PageUser, session: SessionDep, components: ComponentsDep
) -> Response:
    """The owner's uploaded image, inline, for <img> on the job page.

    The API serves uploads as opaque attachments; this serves only inputs of image models, which
    the server decoded and identified at submit, with the type of that decoded format. Nothing
    here is taken from the upload's own name or claimed type.
    """
    not_found = JobNotFound("This job has no image to show.", code="file_not_found")
    job = await jobs.get_owned_job(session, user.id, _parse_id(job_id, JobNotFound("Job not found.")))
    media_type = _inline_image_type(job, await catalog.get_model(session, job.model_slug))
    if media_type is None:
        raise not_found
    stored = await jobs.read_input(session, components.storage, user.id, job.id)
    extension = media_type.removeprefix("image/")
    return Response(
        stored.data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'inline; filename="{job.id}-input.{extension}"',
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            # Photos of people: kept out of shared caches and the browser's disk cache alike.
            "Cache-Control": "private, no-store",
        },
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    request: Request,
    job_id: str,
    user: PageUser,
    session: SessionDep,
    components: ComponentsDep,
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    parsed = _parse_id(job_id, JobNotFound("Job not found."))
    await session.close()
    try:
        await usecases.cancel_job(components, user.id, parsed)
    except JobNotCancelable as exc:
        return redirect(f"/jobs/{parsed}", error=exc.message)
    return redirect(f"/jobs/{parsed}", notice="The job is canceled and its credits are released.")


# -- faces -----------------------------------------------------------------------------------------


@router.get("/faces", response_class=HTMLResponse)
async def faces_page(
    request: Request,
    user: PageUser,
    wallet: PageWallet,
    session: SessionDep,
    components: ComponentsDep,
    number: PageNumber = 1,
) -> Response:
    pager = _pager(number)
    listing = await faces.list_faces(session, user.id, limit=PER_PAGE, offset=pager.offset)
    runnable = {m.slug for m in await catalog.list_models(session) if m.slug in components.predictors}
    return page(
        request,
        "faces.html",
        user=user,
        wallet=wallet,
        nav="faces",
        faces=listing.items,
        pager=_pager(number, listing.total),
        can_enroll="face-enroll" in runnable,
        can_identify="face-identify" in runnable,
    )


@router.post("/faces/{face_id}/delete")
async def delete_face(
    request: Request,
    face_id: str,
    user: PageUser,
    session: SessionDep,
    components: ComponentsDep,
    csrf: CsrfField = None,
) -> Response:
    check_csrf(request, csrf)
    parsed = _parse_id(face_id, FaceNotFound("Face not found."))
    # No read connection held while the use case waits for the writer.
    await session.close()
    await face_usecases.delete_face(components, user.id, parsed)
    return redirect("/faces", notice="The face was removed from your gallery; it is never matched again.")
