"""Dependencies shared by every router: the app's components and the request's read session.

Writes are never made in a request-scoped session: a route calls a use case, which opens its own
unit of work; a route that writes takes no read session, or closes it (``await session.close()``)
before the use case: the request may then wait for the SQLite writer, and a queue of waiters each
holding a pooled connection would starve the one that holds it. (The session checks out a
connection only at its first statement.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Query, Request
from pydantic import BeforeValidator
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    from mlservice.components import Components
    from mlservice.settings import Settings


def components_of(request: Request) -> Components:
    """The app's components, for code outside the dependency system (error handlers, pages)."""
    components: Components = request.app.state.components
    return components


# Async, so FastAPI calls them on the event loop (a plain `def` dependency goes to a thread).
async def get_components(request: Request) -> Components:
    return components_of(request)


async def get_settings(request: Request) -> Settings:
    return components_of(request).settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's read session: one connection checkout and one transaction (on SQLite; reads
    on PostgreSQL autocommit) however many dependencies read."""
    async with components_of(request).db.session() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


ComponentsDep = Annotated["Components", Depends(get_components)]
SettingsDep = Annotated["Settings", Depends(get_settings)]

# Past any listing a person pages through, and far below the databases' 64-bit OFFSET: a larger
# number must be refused here (422), not fail in the database (500).
MAX_OFFSET = 1_000_000_000
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]


_NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def _iso_8601_only(value: object) -> object:
    # pydantic reads a bare number as a Unix timestamp; a query parameter documented as an ISO 8601
    # date-time refuses it instead of guessing.
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        raise ValueError("expected an ISO 8601 date-time such as 2026-11-25T10:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_8601_only)]
