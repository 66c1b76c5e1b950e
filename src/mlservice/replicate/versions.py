"""Replicate's names for our models: ``mlservice/<slug>``, version ids and references, and the
models and versions of ``/v1/models`` as Replicate shows them."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncSession

from mlservice import __version__
from mlservice.catalog.service import ModelNotFound
from mlservice.catalog.tables import CatalogModel
from mlservice.jobs import repository
from mlservice.jobs.prediction_view import OWNER, model_name, version_of
from mlservice.predictors.base import Predictor
from mlservice.replicate.errors import VersionNotFound
from mlservice.replicate.schemas import Model, ModelVersion

_VERSION_ID = re.compile(r"^[0-9a-f]{64}$")
# What a catalog slug can be: anything else names no model, and is not sent to the database.
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Dropped from a reference before an error quotes it back: the caller wrote it, and errors get logged.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
    return await repository.runs_per_model(session, user_id)


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
