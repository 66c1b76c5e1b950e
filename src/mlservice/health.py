"""The operations routes of an API process: liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from mlservice import __version__
from mlservice.components import readiness, scrape_metrics
from mlservice.deps import ComponentsDep
from mlservice.observability.access import check_metrics_access
from mlservice.observability.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": __version__}


@router.get("/ready", responses={503: {"description": "Not ready: the same body, saying what is not"}})
async def ready(components: ComponentsDep) -> JSONResponse:
    """Readiness: the database answers, the broker (if any) is connected and, when this process
    runs jobs with preloading, its models are loaded."""
    ok, body = await readiness(components)
    return JSONResponse(body, 200 if ok else 503)


metrics_router = APIRouter(tags=["observability"])


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, components: ComponentsDep) -> Response:
    """Prometheus exposition of this API process, for its scraper only (see observability.access)."""
    token = components.settings.metrics_token
    check_metrics_access(
        request.headers.get("Authorization"),
        request.client.host if request.client else None,
        token.get_secret_value() if token is not None else None,
    )
    return Response(await scrape_metrics(components), media_type=CONTENT_TYPE)
