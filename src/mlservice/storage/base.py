"""Where job inputs and artifacts live, behind one small interface.

Two implementations: :class:`~mlservice.storage.local.LocalStorage` (files under a directory; the
single-host default, or a shared volume) and :class:`~mlservice.storage.database.DatabaseStorage`
(rows in PostgreSQL, for API processes and workers on different machines). ``session`` is the
caller's unit of work: storage that lives in the database joins it, file storage ignores it and
relies on the caller's after-rollback cleanup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession


class Storage(Protocol):
    # Whether a write given a ``session`` is a statement of its unit of work (database storage),
    # so the unit of work must be a real transaction; file storage writes outside it.
    joins_transactions: bool

    async def put(self, key: str, data: bytes, *, session: AsyncSession | None = None) -> None: ...

    async def get(self, key: str, *, session: AsyncSession | None = None) -> bytes:
        """Raises FileNotFoundError for a missing key."""
        ...

    async def delete(self, key: str, *, session: AsyncSession | None = None) -> None: ...

    async def delete_many(self, keys: Sequence[str], *, session: AsyncSession | None = None) -> None:
        """Delete every one of ``keys``; a missing key is no error (deleting twice is harmless)."""
        ...

    async def exists(self, key: str, *, session: AsyncSession | None = None) -> bool: ...
