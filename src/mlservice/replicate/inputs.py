"""A prediction's input as Replicate's clients send it: split into the model's input and its
parameters, and files read from data URIs or from this server's own file URLs (``Prefer: wait`` is
parsed as ``POST /api/jobs`` parses it, by :mod:`mlservice.jobs.prefer`).

No URL is ever fetched: a file input is a data URI or the URL of a file this server already holds
for the caller (an upload, a job's input, an artifact).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import NotFound
from mlservice.jobs import service as jobs
from mlservice.jobs.errors import FilesExpired, FileTooLarge, MissingInput
from mlservice.predictors.base import InvalidInput, Predictor
from mlservice.replicate.errors import InvalidFileInput, UploadedFileNotFound
from mlservice.replicate.uploads import get_upload
from mlservice.storage.base import Storage
from mlservice.uploads.repository import upload_key

TEXT_KEYS = ("text", "prompt")
FILE_KEYS = ("image", "file")


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
    except FilesExpired:
        raise InvalidFileInput(
            "The job's files expired and are no longer stored; send the file again.", code="files_expired"
        ) from None
    if len(stored.data) > max_bytes:
        raise FileTooLarge(f"The file is larger than the limit of {max_bytes} bytes.", limit=max_bytes)
    return FileInput(stored.data, stored.filename)
