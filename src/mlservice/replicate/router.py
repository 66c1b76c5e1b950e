"""``/v1``: Replicate's HTTP API, so that its clients (``replicate.Client(base_url=...)``) run our
models. Authenticated like ``/api`` but by bearer token only (a JWT or an API key); errors are
Replicate's problem details with our stable code beside them (see
:class:`~mlservice.replicate.problems.ReplicateRoute`, the route class of every ``/v1`` route)."""

from __future__ import annotations

from fastapi import APIRouter

from mlservice.replicate.routes import account, files, models, predictions, webhooks

router = APIRouter(prefix="/v1")
# In the order the routes had when they were one module: that of the OpenAPI document.
router.include_router(predictions.router)
router.include_router(models.router)
router.include_router(files.router)
router.include_router(account.router)
router.include_router(webhooks.router)
