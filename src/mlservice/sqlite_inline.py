"""SQLite for SQLAlchemy's asyncio engine, run on the event loop's own thread.

aiosqlite runs every call on a thread of its connection and hands the result back through the
event loop: a cursor, an execute, a fetch and a close are four round trips between two threads
for each statement, each a wake-up of the loop and a hand-over of the GIL. A job on the embedded
default runs some 25 statements, and a profile of ``mlservice serve`` under load spent more of its
one core in those hand-overs than in the statements themselves. SQLite's statements here take
microseconds (WAL, ``synchronous=NORMAL``: a commit writes the WAL without syncing), so they are run
where they are asked for, on the loop's thread.

The one wait SQLite can have is for another process's writer (the bot's, a second server's, on the
same file). The connections' busy timeout is kept short, so a statement never holds the loop for
long; a statement refused with "database is locked" did nothing, and is tried again after an
``asyncio.sleep`` until :data:`BUSY_TIMEOUT_S` has passed, as SQLite's own busy timeout would.
(Writers of one process already take turns before they begin: ``Database.session``.)

This is the object aiosqlite would give SQLAlchemy (``create_async_engine(...,
async_creator=...)``), with the part of its API that SQLAlchemy's aiosqlite dialect uses. No
library offers SQLite to an asyncio engine without a thread in between.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

# How long a statement waits, in all, for another process's writer.
BUSY_TIMEOUT_S = 30.0
# How long SQLite itself waits before it answers "database is locked" (blocking the loop).
INLINE_BUSY_MS = 5
_FIRST_PAUSE_S = 0.002
_LONGEST_PAUSE_S = 0.05


def _locked(error: sqlite3.OperationalError) -> bool:
    message = str(error)
    return "database is locked" in message or "database table is locked" in message


async def _run(call: Callable[[], Any]) -> Any:
    """``call()``, tried again while another process's writer holds the file."""
    try:
        return call()
    except sqlite3.OperationalError as exc:
        if not _locked(exc):
            raise
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = _FIRST_PAUSE_S
    while True:
        await asyncio.sleep(pause)
        try:
            return call()
        except sqlite3.OperationalError as exc:
            if not _locked(exc) or time.monotonic() > deadline:
                raise
        pause = min(pause * 2, _LONGEST_PAUSE_S)


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cursor = self._cursor
        await _run(lambda: cursor.execute(sql, () if parameters is None else parameters))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        rows = list(parameters)
        cursor = self._cursor
        await _run(lambda: cursor.executemany(sql, rows))
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _Inline:
    """aiosqlite's queue of calls for its thread, which SQLAlchemy's dialect uses to set the
    isolation level: the call runs at once."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        # aiosqlite's names: ``_conn`` the connection, ``_connection`` None once closed.
        self._conn = connection
        self._connection: sqlite3.Connection | None = connection
        self._tx = _Inline()

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._conn.cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        await _run(self._conn.commit)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection = None
            self._conn.close()


def connect_with(args: Sequence[Any], kwargs: Mapping[str, Any]) -> Callable[[], Any]:
    """The ``async_creator`` of an engine: ``sqlite3.connect`` with the arguments SQLAlchemy's
    dialect made of the URL, the busy timeout short, transactions begun by SQLAlchemy."""
    options = {
        **kwargs,
        "timeout": INLINE_BUSY_MS / 1000,
        "isolation_level": None,
        "check_same_thread": False,
    }

    async def connect() -> InlineConnection:
        return InlineConnection(sqlite3.connect(*args, **options))

    return connect
