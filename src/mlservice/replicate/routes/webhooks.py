"""``/v1/webhooks/default/secret``: the key the caller's webhooks are signed with."""

from __future__ import annotations

from fastapi import APIRouter

from mlservice.deps import ComponentsDep, SessionDep
from mlservice.replicate.problems import ReplicateRoute, problems
from mlservice.replicate.routes.dependencies import ApiUser
from mlservice.replicate.schemas import WebhookSigningSecret
from mlservice.webhooks import usecases

router = APIRouter(tags=["replicate"], route_class=ReplicateRoute, responses=problems(401, 422))


@router.get("/webhooks/default/secret", response_model=WebhookSigningSecret)
async def get_default_secret(
    user: ApiUser, session: SessionDep, components: ComponentsDep
) -> WebhookSigningSecret:
    """The secret your webhooks are signed with, those of `/api` jobs too: one per account, the
    one `GET /api/webhooks/secret` shows (and `POST /api/webhooks/secret/rotate` replaces)."""
    # The read connection goes back before the use case waits for the writer (see deps).
    await session.close()
    return WebhookSigningSecret(key=await usecases.get_signing_secret(components, user.id))
