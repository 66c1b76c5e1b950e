"""Every table, imported in one place so ``Base.metadata`` is complete (Alembic, tests)."""

from mlservice.apikeys.tables import ApiKey
from mlservice.catalog.tables import CatalogModel
from mlservice.chats.tables import ChatMessage, TelegramLink, TelegramLinkCode
from mlservice.faces.tables import FaceEntry
from mlservice.history.tables import PredictionRequest
from mlservice.idempotency.tables import IdempotencyKey
from mlservice.jobs.tables import Job
from mlservice.orm import Base
from mlservice.storage.tables import FileBlob
from mlservice.uploads.tables import UploadedFile
from mlservice.users.tables import User
from mlservice.wallet.tables import (
    AlertSettings,
    BalanceAlert,
    CreditGrant,
    GrantPosting,
    Hold,
    LedgerEntry,
    PromoCode,
    PromoRedemption,
    Wallet,
)
from mlservice.webhooks.tables import WebhookDelivery, WebhookSecret

metadata = Base.metadata

__all__ = [
    "AlertSettings",
    "ApiKey",
    "BalanceAlert",
    "CatalogModel",
    "ChatMessage",
    "CreditGrant",
    "FaceEntry",
    "FileBlob",
    "GrantPosting",
    "Hold",
    "IdempotencyKey",
    "Job",
    "LedgerEntry",
    "PredictionRequest",
    "PromoCode",
    "PromoRedemption",
    "TelegramLink",
    "TelegramLinkCode",
    "UploadedFile",
    "User",
    "Wallet",
    "WebhookDelivery",
    "WebhookSecret",
    "metadata",
]
