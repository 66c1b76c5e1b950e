"""What the deployment tests share: a database and a vhost of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.conftest import scratch_pg_database, scratch_vhost


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """A fresh database, migrated by the deployment itself, dropped afterwards."""
    async with scratch_pg_database("mlservice_deploy") as name:
        yield name


@pytest.fixture
def amqp_vhost() -> Iterator[str]:
    with scratch_vhost("mlservice_deploy") as vhost:
        yield vhost
