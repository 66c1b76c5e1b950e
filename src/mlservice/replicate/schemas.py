"""The request and response bodies of ``/v1``, in the shapes Replicate's HTTP API uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from mlservice.jobs.prediction_view import Prediction, PredictionMetrics, PredictionStatus

__all__ = ["Prediction", "PredictionMetrics", "PredictionStatus"]


class PredictionCreate(BaseModel):
    """``POST /v1/models/{owner}/{name}/predictions``: the model is in the path."""

    # Unknown fields are ignored, as Replicate does: its clients send some we do not use (`stream`).
    input: dict[str, Any] = Field(
        default_factory=dict,
        description="The model's input: `text` (alias `prompt`) for text models, `image` or `file` "
        "(a data URI or the URL of a file on this server) for the others, and the model's parameters.",
    )
    webhook: str | None = Field(
        default=None, description="http(s) URL to POST signed news of the prediction to"
    )
    webhook_completed: str | None = Field(
        default=None, description="Older form: a webhook for the `completed` event only"
    )
    webhook_events_filter: list[str] | None = Field(
        default=None, description="Events to send: start, output, logs, completed (default: all)"
    )


class VersionedPredictionCreate(PredictionCreate):
    """``POST /v1/predictions``."""

    version: str = Field(
        min_length=1,
        max_length=200,
        description="A version id, `owner/name`, `owner/name:version` or a model's slug",
    )


class PredictionPage(BaseModel):
    previous: str | None
    next: str | None
    results: list[Prediction]


class ModelVersion(BaseModel):
    id: str
    created_at: datetime
    cog_version: str = Field(description="Not a Cog model: names this server's version instead")
    openapi_schema: dict[str, Any]


class Model(BaseModel):
    url: str
    owner: str
    name: str
    description: str | None
    visibility: Literal["public", "private"] = "public"
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    cover_image_url: str | None = None
    default_example: Prediction | None = None
    run_count: int = Field(description="Your own runs of this model")
    latest_version: ModelVersion | None
    price: int = Field(description="Credits per run (not in Replicate's API)")


class ModelPage(BaseModel):
    previous: str | None
    next: str | None
    results: list[Model]


class VersionPage(BaseModel):
    previous: str | None
    next: str | None
    results: list[ModelVersion]


class FileRead(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    etag: str
    checksums: dict[str, str]
    metadata: dict[str, Any]
    created_at: datetime
    expires_at: datetime | None
    urls: dict[str, str]


class FilePage(BaseModel):
    previous: str | None
    next: str | None
    results: list[FileRead]


class WebhookSigningSecret(BaseModel):
    key: str = Field(
        description="`whsec_` + base64 of the HMAC-SHA256 key of the Standard Webhooks signatures"
    )


class Problem(BaseModel):
    """An error, as Replicate answers them (RFC 7807 problem details), with our stable code."""

    title: str
    status: int
    detail: str
    code: str = Field(description="Stable, machine-readable, as in the `/api` errors")
