"""What a submitted job's request must be before anything is written: its parameters parsed by the
model's schema and its input decoded by the model's own check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anyio

from mlservice.catalog.tables import CatalogModel
from mlservice.jobs.errors import MissingInput
from mlservice.predictors.base import InputLimits, InvalidInput, Predictor

MAX_TEXT_LENGTH = 10_000


@dataclass(frozen=True)
class Submission:
    model_slug: str
    raw_params: str | None
    data: bytes | None
    filename: str | None
    text: str | None
    # ``Cancel-After``: seconds from the submit after which the job is ended (None: never).
    cancel_after_s: float | None = None


def parse_raw_params(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"`params` is not valid JSON: {exc.msg}.", code="invalid_params") from exc
    if not isinstance(value, dict):
        raise InvalidInput("`params` must be a JSON object.", code="invalid_params")
    return value


async def _validate(
    submission: Submission, cls: type[Predictor], limits: InputLimits
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    params = cls.parse_params(parse_raw_params(submission.raw_params))
    text = submission.text
    if cls.input_kind == "text":
        if text is None or not text.strip():
            raise MissingInput("This model needs a non-empty `text`.", code="empty_text")
        text = text.strip()
        if len(text) > MAX_TEXT_LENGTH:
            raise InvalidInput(f"`text` is limited to {MAX_TEXT_LENGTH} characters.", code="text_too_long")
    elif submission.data is None:
        raise MissingInput("This model needs an uploaded `file`.")
    if submission.data is None:
        # A text of at most MAX_TEXT_LENGTH characters: checked in place, quicker than a thread hop.
        meta = cls.prepare_input(None, text, limits)
    else:
        # Decoding to validate can take a while for large images: keep it off the event loop.
        meta = await anyio.to_thread.run_sync(cls.prepare_input, submission.data, text, limits)
    if submission.data is not None:
        meta = {**meta, "bytes": len(submission.data)}
        if submission.filename:
            meta["filename"] = submission.filename[:200]
    return params, meta, text


@dataclass(frozen=True)
class Validated:
    params: dict[str, Any]
    meta: dict[str, Any]
    text: str | None
    # The catalog row as read when the request was checked: its price is what the job costs.
    model: CatalogModel | None = None


async def validate(
    model: CatalogModel, cls: type[Predictor], submission: Submission, limits: InputLimits
) -> Validated:
    """Check the request (parameters, input decoded) before any write transaction.

    On SQLite there is one writer: decoding an upload while holding it would make every other
    submit and every worker's claim and commit wait behind the decode. No connection is needed
    meanwhile: the caller read ``model`` before.
    """
    return Validated(*await _validate(submission, cls, limits), model=model)
