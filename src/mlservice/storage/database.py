"""Job inputs and artifacts as rows of the database, for deployments spread over several machines.

Every API process and worker already shares the database, so nothing else has to be shared. A
write made with the caller's session belongs to its unit of work: a job's input commits or rolls
back together with the job, and an artifact together with the result that names it.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database
from mlservice.storage.local import validate_key
from mlservice.storage.tables import FileBlob
from mlservice.types import utcnow


class DatabaseStorage:
    """Files in the ``stored_files`` table (PostgreSQL ``bytea``; uploads are capped at a few MiB)."""

    joins_transactions = True

    def __init__(self, db: Database) -> None:
        if db.is_sqlite:
            # SQLite means one host, where local files do the same job without the writer lock.
            raise ValueError("database storage needs PostgreSQL; use local storage with SQLite")
        self.db = db

    async def put(self, key: str, data: bytes, *, session: AsyncSession | None = None) -> None:
        validate_key(key)
        stmt = pg_insert(FileBlob).values(key=key, data=data, size=len(data), created_at=utcnow())
        stmt = stmt.on_conflict_do_update(
            index_elements=[FileBlob.key], set_={"data": data, "size": len(data), "created_at": utcnow()}
        )
        if session is not None:
            await session.execute(stmt)
            return
        async with self.db.session(write=True) as own:
            await own.execute(stmt)

    async def get(self, key: str, *, session: AsyncSession | None = None) -> bytes:
        validate_key(key)
        query = select(FileBlob.data).where(FileBlob.key == key)
        if session is not None:
            data = await session.scalar(query)
        else:
            async with self.db.session() as own:
                data = await own.scalar(query)
        if data is None:
            raise FileNotFoundError(key)
        return bytes(data)

    async def delete(self, key: str, *, session: AsyncSession | None = None) -> None:
        validate_key(key)
        stmt = delete(FileBlob).where(FileBlob.key == key)
        if session is not None:
            await session.execute(stmt)
            return
        async with self.db.session(write=True) as own:
            await own.execute(stmt)

    async def delete_many(self, keys: Sequence[str], *, session: AsyncSession | None = None) -> None:
        if not keys:
            return
        stmt = delete(FileBlob).where(FileBlob.key.in_([validate_key(key) for key in keys]))
        if session is not None:
            await session.execute(stmt)
            return
        async with self.db.session(write=True) as own:
            await own.execute(stmt)

    async def exists(self, key: str, *, session: AsyncSession | None = None) -> bool:
        validate_key(key)
        query = select(FileBlob.size).where(FileBlob.key == key)
        if session is not None:
            return await session.scalar(query) is not None
        async with self.db.session() as own:
            return await own.scalar(query) is not None
