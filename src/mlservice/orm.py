"""The declarative base every table derives from, with constraint names Alembic can rely on, and
the batched delete the retention sweep runs on many tables.

Kept apart from :mod:`mlservice.db` (engines and units of work): tables need only this, and the
database module imports every table, so the two never import each other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Integer, MetaData, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, InstrumentedAttribute

# Constraint names Alembic can rely on, on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Autoincrementing 64-bit keys; SQLite only autoincrements a column declared INTEGER.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


async def delete_some(
    session: AsyncSession, key: InstrumentedAttribute[Any], *where: ColumnElement[bool], limit: int
) -> int:
    """Delete up to ``limit`` rows matching ``where`` (one batch of a retention sweep); how many.

    Neither SQLite nor PostgreSQL has ``DELETE ... LIMIT``: the rows are named by a bounded
    subquery of their primary ``key``.
    """
    batch = select(key).where(*where).limit(limit)
    result = await session.execute(
        delete(key.class_).where(key.in_(batch)).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
