from __future__ import annotations

from typing import TYPE_CHECKING

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


@router.get("/ready")
async def ready(components: ComponentsDep) -> JSONResponse:
    """Readiness: the database answers and the broker (if any) is connected."""
    checks = await dependency_checks(components)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)
