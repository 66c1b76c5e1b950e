"""How long each kind of data is kept, from the settings."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from mlservice.settings import Settings

# What a sweep removes, as its metric and its log line name them.
IDEMPOTENCY_KEYS = "idempotency_keys"
UPLOADS = "uploads"
JOB_FILES = "job_files"
WEBHOOK_DELIVERIES = "webhook_deliveries"
API_KEYS = "api_keys"
REQUEST_HISTORY = "request_history"
# Gone once they can no longer be used (no setting: nothing is ever read from them afterwards).
BROWSER_SESSIONS = "browser_sessions"
LINK_CODES = "telegram_link_codes"
# Sent (or given-up) messages to chats: kept as long as delivered webhooks.
CHAT_MESSAGES = "chat_messages"
KINDS = (
    IDEMPOTENCY_KEYS,
    UPLOADS,
    JOB_FILES,
    WEBHOOK_DELIVERIES,
    API_KEYS,
    REQUEST_HISTORY,
    BROWSER_SESSIONS,
    LINK_CODES,
    CHAT_MESSAGES,
)


def _kept(amount: float, unit: timedelta) -> timedelta | None:
    return amount * unit if amount > 0 else None


@dataclass(frozen=True)
class RetentionPolicy:
    """Each kind's age at which it goes (None: kept forever). Uploads carry their own expiry."""

    idempotency_keys: timedelta | None = timedelta(hours=24)
    job_files: timedelta | None = timedelta(days=30)
    delivered_webhooks: timedelta | None = timedelta(days=7)
    failed_webhooks: timedelta | None = timedelta(days=30)
    revoked_api_keys: timedelta | None = timedelta(days=30)
    request_history: timedelta | None = timedelta(days=365)
    batch_size: int = 500

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        hour, day = timedelta(hours=1), timedelta(days=1)
        return cls(
            idempotency_keys=_kept(settings.retention_idempotency_keys_hours, hour),
            job_files=_kept(settings.retention_job_files_days, day),
            delivered_webhooks=_kept(settings.retention_delivered_webhooks_days, day),
            failed_webhooks=_kept(settings.retention_failed_webhooks_days, day),
            revoked_api_keys=_kept(settings.retention_revoked_api_keys_days, day),
            request_history=_kept(settings.retention_request_history_days, day),
            batch_size=settings.retention_batch_size,
        )
