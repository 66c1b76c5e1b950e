"""A job in the shape of a Replicate prediction: what ``/v1`` answers and the body of the webhooks
of jobs made through it.

Outside :mod:`mlservice.replicate` because workers render those webhook bodies too, and a worker
imports none of the HTTP API (see :mod:`mlservice.components`, which registers the formatter).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlservice import __version__
from mlservice.jobs.tables import Job, JobStatus
from mlservice.jobs.validation import MAX_TEXT_LENGTH
from mlservice.jobs.views import files_expired_at
from mlservice.predictors.base import Predictor
from mlservice.security.signed_urls import SignedUrls

PredictionStatus = Literal["starting", "processing", "succeeded", "failed", "canceled", "aborted"]

# The flavour of the webhook bodies of jobs made through /v1 (see mlservice.webhooks).
WEBHOOK_FLAVOUR = "replicate"

# Every model of this server has this owner: `mlservice/<slug>`. Other owners are other services'
# models, which this server does not have (404), rather than a way to spell ours.
OWNER = "mlservice"
_STATUSES: dict[str, PredictionStatus] = {
    JobStatus.queued: "starting",
    JobStatus.running: "processing",
    JobStatus.succeeded: "succeeded",
    JobStatus.failed: "failed",
    JobStatus.canceled: "canceled",
    JobStatus.aborted: "aborted",
}


def _unknown(value: float | None) -> bool:
    return value is None


class PredictionMetrics(BaseModel):
    """What Replicate's predictions say of their times: nothing (``{}``) until they finish."""

    # Left out rather than null while unknown, as Replicate answers: clients read the keys there are.
    predict_time: float | None = Field(
        default=None, exclude_if=_unknown, description="Seconds the model ran (once finished)"
    )
    total_time: float | None = Field(
        default=None, exclude_if=_unknown, description="Seconds from creation to completion (once finished)"
    )


def metrics_of(job: Job) -> PredictionMetrics:
    status = JobStatus(job.status)
    if not status.finished or job.finished_at is None:
        return PredictionMetrics()
    predict = job.processing_ms / 1000 if job.processing_ms is not None else None
    if predict is None and job.started_at is not None:
        # A failure or a cancel records no model time (the model raised, timed out, never loaded
        # or was stopped): the time from the attempt's start is. An aborted job never started.
        predict = max((job.finished_at - job.started_at).total_seconds(), 0.0)
    return PredictionMetrics(
        predict_time=predict, total_time=(job.finished_at - job.created_at).total_seconds()
    )


class Prediction(BaseModel):
    id: str
    model: str = Field(description="`owner/name`")
    version: str
    input: dict[str, Any]
    output: dict[str, Any] | None
    error: str | None
    logs: str
    status: PredictionStatus
    data_removed: bool = False
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    metrics: PredictionMetrics
    urls: dict[str, str]


def model_name(slug: str) -> str:
    return f"{OWNER}/{slug}"


def input_schema(cls: type[Predictor]) -> dict[str, Any]:
    """The JSON Schema of a prediction's ``input`` for this model: its input, then its parameters."""
    params = cls.params_model.model_json_schema()
    properties: dict[str, Any] = {}
    if cls.input_kind == "text":
        key = "text"
        properties[key] = {
            "type": "string",
            "title": "Text",
            "maxLength": MAX_TEXT_LENGTH,
            "description": "The text to run the model on (`prompt` is accepted too).",
        }
    else:
        key = "image" if cls.input_kind == "image" else "file"
        properties[key] = {
            "type": "string",
            "format": "uri",
            "title": key.capitalize(),
            "description": "A data URI, or the URL of a file on this server (POST /v1/files). "
            + ("`file` is accepted too." if key == "image" else ""),
        }
    properties.update(params.get("properties", {}))
    schema: dict[str, Any] = {
        "type": "object",
        "title": "Input",
        "properties": properties,
        "required": [key, *params.get("required", [])],
    }
    if "$defs" in params:
        schema["$defs"] = params["$defs"]
    return schema


@dataclass(frozen=True)
class VersionInfo:
    id: str
    openapi_schema: dict[str, Any]


def version_of(cls: type[Predictor]) -> VersionInfo:
    """A model's one version: its id changes when what the model takes (its input schema) does."""
    return _version_of(cls)


@functools.cache
def _version_of(cls: type[Predictor]) -> VersionInfo:
    inputs = input_schema(cls)
    canonical = json.dumps({"model": cls.slug, "input": inputs}, sort_keys=True, separators=(",", ":"))
    schema = {
        "openapi": "3.0.2",
        "info": {"title": cls.title, "version": __version__},
        "paths": {},
        "components": {"schemas": {"Input": inputs, "Output": {"type": "object", "title": "Output"}}},
    }
    return VersionInfo(hashlib.sha256(canonical.encode()).hexdigest(), schema)


def _file_key(cls: type[Predictor] | None) -> str:
    return "image" if cls is not None and cls.input_kind == "image" else "file"


def prediction_of(
    job: Job,
    predictors: Mapping[str, type[Predictor]],
    base_url: str,
    links: SignedUrls,
    *,
    waited_out: bool = False,
) -> Prediction:
    """The job in Replicate's shape. Its file outputs and ``urls.stream`` are links that open
    without a credential for a while (``links``), as Replicate's clients fetch them.

    ``waited_out``: the answer to a create (a ``Prefer: wait`` that ran out before the job finished,
    or no wait at all). Such an answer says ``starting`` whatever the unfinished job is doing, as
    Replicate's does: its clients take any other status in that answer for a finished prediction
    and stop waiting.
    """
    cls = predictors.get(job.model_slug)
    given: dict[str, Any] = dict(job.params or {})
    if job.input_text is not None:
        given["text"] = job.input_text
    if job.input_file is not None:
        given[_file_key(cls)] = f"{base_url}/api/jobs/{job.id}/input"
    output = None
    if job.output is not None:
        output = dict(job.output)
        if job.artifacts:
            files = {
                name: base_url + links.sign(f"/api/jobs/{job.id}/artifacts/{name}", job.user_id)
                for name in sorted(job.artifacts)
            }
            output.setdefault("files", files)
    status = JobStatus(job.status)
    url = f"{base_url}/v1/predictions/{job.id}"
    return Prediction(
        id=str(job.id),
        model=model_name(job.model_slug),
        version=version_of(cls).id if cls is not None else "",
        input=given,
        output=output,
        error=(job.error_message or job.error_code) if status is JobStatus.failed else None,
        logs=job.logs or "",
        status="starting" if waited_out and not status.finished else _STATUSES[status],
        # As Replicate says of a prediction whose files it removed: its file URLs answer 410.
        data_removed=files_expired_at(job) is not None,
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.finished_at,
        metrics=metrics_of(job),
        urls={
            "get": url,
            "cancel": f"{url}/cancel",
            "stream": base_url + links.sign(f"/v1/predictions/{job.id}/stream", job.user_id),
            "web": f"{base_url}/jobs/{job.id}",
        },
    )


def prediction_body(job: Job, predictors: Mapping[str, type[Predictor]], links: SignedUrls) -> dict[str, Any]:
    """A webhook's body for a job made through /v1: the prediction, as GET /v1/predictions/{id}
    answers it. A worker does not know the address clients reach this server by: the URLs in it
    are paths on this server."""
    return prediction_of(job, predictors, "", links).model_dump(mode="json")
