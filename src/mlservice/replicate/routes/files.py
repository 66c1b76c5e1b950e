"""``/v1/files``: upload a file to give to predictions by its URL, list, read and delete yours."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, Response, UploadFile, status

from mlservice.deps import ComponentsDep, SessionDep
from mlservice.jobs.router import read_upload
from mlservice.replicate import uploads, usecases
from mlservice.replicate.problems import ReplicateRoute, problems
from mlservice.replicate.routes.dependencies import ApiUser, base_url, limit_v1_submissions
from mlservice.replicate.schemas import FilePage, FileRead

router = APIRouter(tags=["replicate"], route_class=ReplicateRoute, responses=problems(401, 422))


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
    metadata: Annotated[
        str | UploadFile | None,
        Form(
            description="A JSON object kept with the file: a text field, or a part of its own "
            "(`application/json`, as Replicate's JavaScript client sends it)"
        ),
    ] = None,
) -> FileRead:
    """Upload a file to give to predictions by its `urls.get`; only you can read or use it, and it
    expires (after a day unless this server keeps uploads otherwise: see `expires_at`). The
    upload limit is that of `POST /api/jobs`."""
    data = await read_upload(content, components.settings.max_upload_bytes)
    assert data is not None
    meta = uploads.parse_metadata(await _metadata_of(metadata))
    await session.close()
    row = await usecases.upload_file(
        components,
        user.id,
        data=data,
        name=filename or content.filename or "file",
        content_type=type or content.content_type or "application/octet-stream",
        metadata=meta,
    )
    return uploads.file_of(row, base_url(request))


async def _metadata_of(part: str | UploadFile | None) -> str | bytes | None:
    """``metadata`` however it came: a field's text, or the bytes of a part with a file name (the
    form parser takes such a part for a file, and a JavaScript ``Blob`` always has one: ``blob``)."""
    # Not isinstance(part, UploadFile): the form parser makes Starlette's, which FastAPI's subclasses.
    if part is None or isinstance(part, str):
        return part
    # A byte past the most parse_metadata takes is enough to refuse it: the rest is never read.
    return await part.read(uploads.MAX_METADATA_BYTES + 1)


@router.get("/files", response_model=FilePage)
async def list_files(request: Request, user: ApiUser, session: SessionDep) -> FilePage:
    """Your files that have not expired, newest first (all of them: there are at most a hundred)."""
    rows = await uploads.list_uploads(session, user.id)
    base = base_url(request)
    return FilePage(previous=None, next=None, results=[uploads.file_of(r, base) for r in rows])


@router.get("/files/{file_id}", response_model=FileRead, responses=problems(404))
async def get_file(request: Request, file_id: str, user: ApiUser, session: SessionDep) -> FileRead:
    return uploads.file_of(await uploads.get_upload(session, user.id, file_id), base_url(request))


@router.get("/files/{file_id}/download", response_class=Response, responses=problems(404))
async def download_file(
    file_id: str, user: ApiUser, session: SessionDep, components: ComponentsDep
) -> Response:
    """The file's bytes, as an attachment and opaque bytes (never rendered inline)."""
    row, data = await uploads.read_upload(session, components.storage, user.id, file_id)
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
    await usecases.delete_file(components, user.id, file_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
