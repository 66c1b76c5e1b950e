from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class WebhookSecretRead(BaseModel):
    secret: str = Field(description="`whsec_` + base64 of the HMAC-SHA256 key your webhooks are signed with")


class WebhookDeliveryRead(BaseModel):
    """One event sent (or being sent) to a job's webhook."""

    model_config = ConfigDict(from_attributes=True)

    id: int = Field(description="Sent as the `webhook-id` header; the same for every attempt")
    event: str
    url: str
    status: str = Field(description="pending, delivered or failed (given up)")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When it is tried next, while pending")
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: Any) -> WebhookDeliveryRead:
        """A delivery as users read it: when it is tried next only while it is pending."""
        read = cls.model_validate(delivery)
        return read if delivery.status == "pending" else read.model_copy(update={"next_attempt_at": None})
