from __future__ import annotations

import asyncio

from sqlalchemy import inspect

from mlservice.db import Database
from mlservice.migrations.runner import downgrade, upgrade
from mlservice.tables import metadata


async def table_names(url: str) -> set[str]:
    db = Database(url)
    try:
        async with db.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await db.dispose()


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    expected = {t.name for t in metadata.sorted_tables}
    assert expected <= await table_names(database_url)  # the session fixture upgraded to head
    try:
        await asyncio.to_thread(downgrade, database_url, "base")
        assert await table_names(database_url) - {"alembic_version"} == set()
    finally:
        await asyncio.to_thread(upgrade, database_url)
    assert expected <= await table_names(database_url)


async def test_models_match_migrations(database_url: str) -> None:
    """The tables the code declares are exactly what the migrations build: nothing to autogenerate."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    db = Database(database_url)
    try:
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(lambda c: compare_metadata(MigrationContext.configure(c), metadata))
    finally:
        await db.dispose()
    assert diff == []
