"""Replicate's API over our jobs: model references, inputs, predictions, cursors and uploads.

Everything a prediction costs, checks and records is :mod:`mlservice.jobs.service`'s, exactly as for
``POST /api/jobs``; this module only translates. Files come in as data URIs or as URLs of files this
server already holds for the caller (uploads, job inputs, artifacts): no URL is ever fetched.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes, urlencode, urlsplit

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice import __version__
from mlservice.catalog.service import ModelNotFound
from mlservice.catalog.tables import CatalogModel
from mlservice.db import after_rollback
from mlservice.errors import NotFound
from mlservice.history.recording import RequestRecord
from mlservice.jobs import service as jobs
from mlservice.jobs.errors import FileTooLarge, JobNotFound, MissingInput
from mlservice.jobs.prediction_view import OWNER, WEBHOOK_FLAVOUR, model_name, version_of
from mlservice.jobs.submission import submit_recorded
from mlservice.jobs.tables import Job
from mlservice.jobs.validation import Submission
from mlservice.predictors.base import InvalidInput, Predictor
from mlservice.replicate.errors import (
    InvalidCursor,
    InvalidFileInput,
    InvalidPrefer,
    TooManyFiles,
    UploadedFileNotFound,
    VersionNotFound,
)
from mlservice.replicate.schemas import (
    FileRead,
    Model,
    ModelVersion,
    PredictionCreate,
)
from mlservice.storage.base import Storage
from mlservice.types import utcnow
from mlservice.uploads.tables import UploadedFile
from mlservice.webhooks.service import subscription

if TYPE_CHECKING:
    from mlservice.components import Components

MAX_WAIT_S = 60
PAGE_SIZE = 100
TEXT_KEYS = ("text", "prompt")
FILE_KEYS = ("image", "file")
# Uploads are inputs waiting for a prediction, not a file store: they expire, and each user may
# keep only so many at once (uploads cost nothing, so nothing else would bound the disk they use).
FILE_LIFETIME = timedelta(hours=24)
MAX_LIVE_FILES = 100
MAX_METADATA_CHARS = 10_000

_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
# What a catalog slug can be: anything else names no model, and is not sent to the database.
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- models and versions ---------------------------------------------------------------------------


def model_version(cls: type[Predictor], row: CatalogModel) -> ModelVersion:
    info = version_of(cls)
    return ModelVersion(
        id=info.id,
        created_at=row.created_at,
        cog_version=f"mlservice {__version__}",
        openapi_schema=info.openapi_schema,
    )


def _model_not_found(ref: str) -> ModelNotFound:
    return ModelNotFound(
        f"There is no model {_CONTROL.sub('', ref)[:200]!r}; models here are {OWNER}/<name>."
    )


def slug_of_owner_name(owner: str, name: str) -> str:
    if owner != OWNER or not _SLUG.match(name):
        raise _model_not_found(f"{owner}/{name}")
    return name


def slug_of_version(ref: str, predictors: Mapping[str, type[Predictor]]) -> str:
    """The model that ``version`` names: a version id, ``owner/name[:version]`` or a slug."""
    ref = ref.strip()
    if "/" in ref:
        owner, _, rest = ref.partition("/")
        name, colon, version = rest.partition(":")
        slug = slug_of_owner_name(owner, name)
        if colon and slug in predictors and version_of(predictors[slug]).id != version:
            raise VersionNotFound(f"The model {ref.split(':')[0]} has no version {version!r}.")
        return slug
    if _VERSION_ID.match(ref):
        for slug, cls in predictors.items():
            if version_of(cls).id == ref:
                return slug
        if ref not in predictors:
            raise VersionNotFound(f"There is no model version {ref!r}.")
    if not _SLUG.match(ref):
        raise _model_not_found(ref)
    return ref


def installed(slug: str, predictors: Mapping[str, type[Predictor]]) -> type[Predictor]:
    cls = predictors.get(slug)
    if cls is None:
        raise ModelNotFound(f"The model {model_name(slug)} is not installed on this server.")
    return cls


async def run_counts(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    rows = await session.execute(
        select(Job.model_slug, func.count()).where(Job.user_id == user_id).group_by(Job.model_slug)
    )
    return {slug: count for slug, count in rows.tuples()}


def model_of(
    row: CatalogModel, predictors: Mapping[str, type[Predictor]], base_url: str, run_count: int
) -> Model:
    cls = predictors.get(row.slug)
    return Model(
        url=f"{base_url}/models/{row.slug}",
        owner=OWNER,
        name=row.slug,
        description=row.description or row.title,
        run_count=run_count,
        latest_version=model_version(cls, row) if cls is not None else None,
        price=row.price,
    )


# -- input ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitInput:
    text: str | None
    file: str | None
    params: dict[str, Any]


def _one_of(values: Mapping[str, Any], keys: Sequence[str]) -> tuple[str, Any] | None:
    given = [key for key in keys if key in values]
    if len(given) > 1:
        names = " or ".join(f"`{key}`" for key in given)
        raise InvalidInput(f"Give only one of {names}.", code="ambiguous_input")
    return (given[0], values[given[0]]) if given else None


def split_input(cls: type[Predictor], values: Mapping[str, Any]) -> SplitInput:
    """The model's input (text or file) and its parameters: every other key of ``input``."""
    keys = TEXT_KEYS if cls.input_kind == "text" else FILE_KEYS
    found = _one_of(values, keys)
    params = {k: v for k, v in values.items() if k not in keys}
    if found is None:
        if cls.input_kind == "text":
            return SplitInput(None, None, params)  # refused by the model's own validation
        raise MissingInput(
            f"This model needs `{'image' if cls.input_kind == 'image' else 'file'}`: a data URI or the "
            "URL of a file uploaded with POST /v1/files."
        )
    key, value = found
    if not isinstance(value, str):
        raise InvalidInput(f"`{key}` must be a string.", code="invalid_input")
    if "\x00" in value:
        raise InvalidInput(f"`{key}` must not contain NUL characters.", code="invalid_input")
    if cls.input_kind == "text":
        return SplitInput(value, None, params)
    return SplitInput(None, value, params)


def decode_data_uri(value: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:`` URI (base64 or percent-encoded), refused past ``max_bytes``."""
    header, comma, payload = value[len("data:") :].partition(",")
    if not comma:
        raise InvalidFileInput("This data URI has no `,` before its data.", code="invalid_data_uri")
    too_large = FileTooLarge(f"The file is larger than the limit of {max_bytes} bytes.", limit=max_bytes)
    if header.split(";")[-1].strip().lower() == "base64":
        compact = "".join(payload.split())
        # Checked on the encoded length first: a huge payload is refused before it is decoded.
        if len(compact) // 4 * 3 > max_bytes + 2:
            raise too_large
        try:
            data = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidFileInput("The data URI is not valid base64.", code="invalid_data_uri") from None
    else:
        if len(payload) > 3 * max_bytes:
            raise too_large
        data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise too_large
    return data


_OWN_FILE_PATHS = (
    ("upload", re.compile(r"^/v1/files/(?P<id>[^/]+)(?:/download)?$")),
    ("artifact", re.compile(r"^/api/jobs/(?P<id>[^/]+)/artifacts/(?P<name>[^/]+)$")),
    ("input", re.compile(r"^/api/jobs/(?P<id>[^/]+)/input$")),
)


@dataclass(frozen=True)
class FileInput:
    data: bytes
    filename: str | None


def _file_gone(what: str) -> InvalidFileInput:
    return InvalidFileInput(f"{what} is not found, or is not yours.", code="file_not_found")


async def resolve_file(
    value: str,
    *,
    session: AsyncSession,
    storage: Storage,
    user_id: uuid.UUID,
    base_url: str,
    max_bytes: int,
) -> FileInput:
    """The bytes a file input names. Only data URIs and this server's own file URLs are taken,
    each read from storage for its owner only: nothing is ever downloaded (no SSRF)."""
    if value.startswith("data:"):
        return FileInput(decode_data_uri(value, max_bytes), None)
    try:
        url = urlsplit(value)
    except ValueError:
        raise InvalidFileInput("This file input is not a valid URL.") from None
    base = urlsplit(base_url)
    own = (url.scheme in {"http", "https"} and url.netloc == base.netloc) or (
        not url.scheme and not url.netloc and url.path.startswith("/")
    )
    path = url.path
    if own and base.path.rstrip("/") and path.startswith(base.path.rstrip("/") + "/"):
        path = path[len(base.path.rstrip("/")) :]
    match = next(((kind, m) for kind, pattern in _OWN_FILE_PATHS if (m := pattern.match(path))), None)
    if not own or match is None:
        raise InvalidFileInput(
            "A file input must be a data URI or the URL of a file on this server (upload it with "
            "POST /v1/files); other URLs are never fetched."
        )
    kind, found = match
    if kind == "upload":
        try:
            row = await get_upload(session, user_id, unquote(found["id"]))
            data = await storage.get(upload_key(row.id), session=session)
        except (UploadedFileNotFound, FileNotFoundError):
            raise _file_gone("The uploaded file") from None
        return FileInput(data, row.name)
    try:
        job_id = uuid.UUID(unquote(found["id"]))
    except ValueError:
        raise _file_gone("The job's file") from None
    try:
        if kind == "artifact":
            stored = await jobs.read_artifact(session, storage, user_id, job_id, unquote(found["name"]))
        else:
            stored = await jobs.read_input(session, storage, user_id, job_id)
    except NotFound:
        raise _file_gone("The job's file") from None
    if len(stored.data) > max_bytes:
        raise FileTooLarge(f"The file is larger than the limit of {max_bytes} bytes.", limit=max_bytes)
    return FileInput(stored.data, stored.filename)


def wait_seconds(prefer: str | None) -> float | None:
    """The wait that a ``Prefer`` header asks for (``wait`` is 60 s, ``wait=N`` 1 to 60 s)."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() != "wait":
            continue  # preferences we do not know are ignored, as RFC 7240 asks
        value = value.strip().strip('"')
        if not value:
            return MAX_WAIT_S
        if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_WAIT_S:
            raise InvalidPrefer(f"`Prefer: wait=N` takes N from 1 to {MAX_WAIT_S} seconds.")
        return int(value)
    return None


# -- predictions ----------------------------------------------------------------------------------


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
) -> uuid.UUID:
    """Submit a prediction as ``POST /api/jobs`` submits a job, and return the job's id.

    ``session`` is the request's read session: the model and any file input are read with it,
    then it is closed before the input is decoded and the write transaction waits for the writer.
    """
    settings = components.settings
    model, cls = await jobs.runnable_model(session, slug, components.predictors)
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
    )
    record.describe(submission)
    await session.close()
    outcome = await submit_recorded(
        components,
        user_id=user_id,
        submission=submission,
        model=model,
        predictor=cls,
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
        return await jobs.wait_for_job(components.db, components.events, user_id, job_id, wait_s)
    return await jobs.read_job(components.db, user_id, job_id)


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
    where = [Job.user_id == user_id]
    if cursor is None or cursor.older:
        if cursor is not None:
            where.append(
                or_(
                    Job.created_at < cursor.created_at,
                    and_(Job.created_at == cursor.created_at, Job.id < cursor.id),
                )
            )
        order = (Job.created_at.desc(), Job.id.desc())
    else:
        where.append(
            or_(
                Job.created_at > cursor.created_at,
                and_(Job.created_at == cursor.created_at, Job.id > cursor.id),
            )
        )
        order = (Job.created_at.asc(), Job.id.asc())
    rows = list(await session.scalars(select(Job).where(*where).order_by(*order).limit(limit + 1)))
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


def page_url(base_url: str, path: str, cursor: str | None, limit: int | None) -> str | None:
    if cursor is None:
        return None
    query: dict[str, str | int] = {"cursor": cursor}
    if limit is not None:
        query["limit"] = limit
    return f"{base_url}{path}?{urlencode(query)}"


def offset_of(token: str | None) -> int:
    """Models are few and change rarely: their cursor is an offset."""
    if token is None:
        return 0
    if not (token.isascii() and token.isdigit()) or len(token) > 9:
        raise InvalidCursor("This cursor is not one this server made.")
    return int(token)


# -- uploads --------------------------------------------------------------------------------------


def upload_key(file_id: uuid.UUID) -> str:
    return f"uploads/{file_id}"


def parse_metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    if len(raw) > MAX_METADATA_CHARS:
        raise InvalidInput(
            f"`metadata` is limited to {MAX_METADATA_CHARS} characters.", code="invalid_metadata"
        )
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidInput("`metadata` must be a JSON object.", code="invalid_metadata") from None
    if not isinstance(value, dict):
        raise InvalidInput("`metadata` must be a JSON object.", code="invalid_metadata")
    return value


async def _remove_upload(session: AsyncSession, storage: Storage, row: UploadedFile) -> None:
    await session.execute(delete(UploadedFile).where(UploadedFile.id == row.id))
    await storage.delete(upload_key(row.id), session=session)


async def create_upload(
    session: AsyncSession,
    storage: Storage,
    user_id: uuid.UUID,
    *,
    data: bytes,
    name: str,
    content_type: str,
    metadata: dict[str, Any],
) -> UploadedFile:
    now = utcnow()
    # The user's expired uploads go first: they stop counting, and storage stops holding them.
    expired = await session.scalars(
        select(UploadedFile)
        .where(UploadedFile.user_id == user_id, UploadedFile.expires_at <= now)
        .limit(MAX_LIVE_FILES)
    )
    for row in list(expired):
        await _remove_upload(session, storage, row)
    live = await session.scalar(
        select(func.count())
        .select_from(UploadedFile)
        .where(UploadedFile.user_id == user_id, UploadedFile.expires_at > now)
    )
    if (live or 0) >= MAX_LIVE_FILES:
        raise TooManyFiles(
            f"You keep {MAX_LIVE_FILES} uploaded files already; delete some (DELETE /v1/files/{{id}}) "
            "or wait until they expire.",
            limit=MAX_LIVE_FILES,
        )
    upload = UploadedFile(
        id=uuid.uuid4(),
        user_id=user_id,
        name=_CONTROL.sub("", name)[:255] or "file",
        content_type=_CONTROL.sub("", content_type)[:255] or "application/octet-stream",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        file_metadata=metadata,
        created_at=now,
        expires_at=now + FILE_LIFETIME,
    )
    session.add(upload)
    await session.flush()
    key = upload_key(upload.id)
    await storage.put(key, data, session=session)
    after_rollback(session, lambda: storage.delete(key))
    return upload


async def get_upload(session: AsyncSession, user_id: uuid.UUID, file_id: str) -> UploadedFile:
    """The caller's unexpired upload; anybody else's, or an expired one, is not found."""
    try:
        key = uuid.UUID(file_id)
    except ValueError:
        raise UploadedFileNotFound("File not found.") from None
    row = await session.get(UploadedFile, key)
    if row is None or row.user_id != user_id or row.expires_at <= utcnow():
        raise UploadedFileNotFound("File not found.")
    return row


async def read_upload(
    session: AsyncSession, storage: Storage, user_id: uuid.UUID, file_id: str
) -> tuple[UploadedFile, bytes]:
    row = await get_upload(session, user_id, file_id)
    try:
        return row, await storage.get(upload_key(row.id), session=session)
    except FileNotFoundError:
        raise UploadedFileNotFound("The file is no longer stored.") from None


async def list_uploads(session: AsyncSession, user_id: uuid.UUID) -> list[UploadedFile]:
    """Every unexpired upload of the user, newest first (at most :data:`MAX_LIVE_FILES`)."""
    rows = await session.scalars(
        select(UploadedFile)
        .where(UploadedFile.user_id == user_id, UploadedFile.expires_at > utcnow())
        .order_by(UploadedFile.created_at.desc(), UploadedFile.id.desc())
        .limit(MAX_LIVE_FILES)
    )
    return list(rows)


async def delete_upload(session: AsyncSession, storage: Storage, user_id: uuid.UUID, file_id: str) -> None:
    await _remove_upload(session, storage, await get_upload(session, user_id, file_id))


def file_of(row: UploadedFile, base_url: str) -> FileRead:
    return FileRead(
        id=str(row.id),
        name=row.name,
        content_type=row.content_type,
        size=row.size,
        etag=row.sha256,
        checksums={"sha256": row.sha256},
        metadata=row.file_metadata or {},
        created_at=row.created_at,
        expires_at=row.expires_at,
        urls={"get": f"{base_url}/v1/files/{row.id}"},
    )
