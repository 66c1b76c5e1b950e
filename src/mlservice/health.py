from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mlservice import __version__
from mlservice.deps import ComponentsDep

if TYPE_CHECKING:
    from mlservice.app import Components

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": __version__}


async def dependency_checks(components: Components) -> dict[str, str]:
    """ "ok" or the error, for the database and (when there is one) the broker."""
    checks: dict[str, str] = {}
    try:
        async with components.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if components.queue.durable:
        checks["broker"] = "ok" if components.queue.connected else "error: not connected"
    return checks


async def readiness(components: Components) -> tuple[bool, dict[str, Any]]:
    """Database reachable, broker connected, and (when preloading) every model this process runs
    loaded; the state of each of those models (none for an API process that runs no jobs)."""
    checks = await dependency_checks(components)
    pool = components.pool
    workers = components.workers
    models = (
        {slug: "loaded" if pool.is_loaded(slug) else "not loaded" for slug in pool.classes}
        if workers is not None
        else {}
    )
    ok = all(value == "ok" for value in checks.values())
    if components.settings.preload_models:
        ok = ok and all(state == "loaded" for state in models.values())
    running = len(workers.executor.running) if workers is not None else 0
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": checks,
        "models": models,
        "running_jobs": running,
    }
    return ok, body


@router.get("/ready", responses={503: {"description": "Not ready: the same body, saying what is not"}})
async def ready(components: ComponentsDep) -> JSONResponse:
    """Readiness: the database answers, the broker (if any) is connected and, when this process
    runs jobs with preloading, its models are loaded."""
    ok, body = await readiness(components)
    return JSONResponse(body, 200 if ok else 503)
