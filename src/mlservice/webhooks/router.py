from __future__ import annotations

import uuid

from fastapi import APIRouter

from mlservice.deps import ComponentsDep, SessionDep
from mlservice.errors import error_responses
from mlservice.users.auth import CurrentUser
from mlservice.webhooks import service, usecases
from mlservice.webhooks.schemas import WebhookDeliveryRead, WebhookSecretRead

router = APIRouter(tags=["webhooks"], responses=error_responses(401))


@router.get("/webhooks/secret", response_model=WebhookSecretRead)
async def get_secret(user: CurrentUser, session: SessionDep, components: ComponentsDep) -> WebhookSecretRead:
    """The secret your webhooks are signed with (made on first use)."""
    # The read connection goes back before the use case waits for the writer (see deps).
    await session.close()
    return WebhookSecretRead(secret=await usecases.get_signing_secret(components, user.id))


@router.post("/webhooks/secret/rotate", response_model=WebhookSecretRead)
async def rotate_secret(
    user: CurrentUser, session: SessionDep, components: ComponentsDep
) -> WebhookSecretRead:
    """Replace the secret: every attempt from now on, retries included, is signed with the new one."""
    await session.close()
    return WebhookSecretRead(secret=await usecases.rotate_signing_secret(components, user.id))


@router.get(
    "/jobs/{job_id}/webhooks", response_model=list[WebhookDeliveryRead], responses=error_responses(404)
)
async def job_webhooks(
    job_id: uuid.UUID, user: CurrentUser, session: SessionDep
) -> list[WebhookDeliveryRead]:
    """The webhook deliveries of one of your jobs, oldest first."""
    deliveries = await service.job_deliveries(session, user.id, job_id)
    return [WebhookDeliveryRead.of(d) for d in deliveries]
