"""Every table, imported in one place so ``Base.metadata`` is complete (Alembic, tests)."""

from mlservice.catalog.tables import CatalogModel
from mlservice.db import Base
from mlservice.faces.tables import FaceEntry
from mlservice.idempotency.tables import IdempotencyKey
from mlservice.jobs.tables import Job
from mlservice.users.tables import User
from mlservice.wallet.tables import Hold, LedgerEntry, Wallet

metadata = Base.metadata

__all__ = [
    "CatalogModel",
    "FaceEntry",
    "Hold",
    "IdempotencyKey",
    "Job",
    "LedgerEntry",
    "User",
    "Wallet",
    "metadata",
]
