"""Engine, sessions and the unit of work.

One code path for SQLite (the embedded default) and PostgreSQL. The unit of work is the only
commit point: request dependencies and workers open one with :meth:`Database.session`, services
only ``flush()``.

Writers on SQLite are serialised by an in-process lock taken *before* the transaction starts
(``write=True``): SQLite allows one writer, and a deferred transaction that read before another
writer committed could not write at all. On PostgreSQL writers run concurrently and services lock
the rows they debit (``SELECT ... FOR UPDATE``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
from sqlalchemy import event, make_url
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

# Every mapper must be known before the first query, whichever process this is.
import mlservice.tables  # noqa: F401
from mlservice import sqlite_inline
from mlservice.errors import AppError, ServiceUnavailable, is_outage

log = logging.getLogger(__name__)

Callback = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, callback: Callback) -> None:
    """Run ``callback`` once the unit of work owning ``session`` has committed (e.g. publish)."""
    session.info.setdefault("after_commit", []).append(callback)


def before_commit(session: AsyncSession, key: str, callback: Callback) -> None:
    """Run ``callback`` inside the unit of work, right before it commits; once per ``key``.

    For work that is cheaper done once per transaction than once per change (one notification
    for every job a batch finished, say).
    """
    session.info.setdefault("before_commit", {}).setdefault(key, callback)


def after_rollback(session: AsyncSession, callback: Callback) -> None:
    """Run ``callback`` if the unit of work rolls back (e.g. delete a file written for it)."""
    session.info.setdefault("after_rollback", []).append(callback)


# The execution option that tells a SQLite connection how to begin its transactions.
_SQLITE_BEGIN = "mlservice_sqlite_begin"


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (SQLAlchemy's recipe
        # for correct SQLite transactions), and set the pragmas every connection needs.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Short: a statement refused for another process's writer waits off the loop (sqlite_inline).
        cursor.execute(f"PRAGMA busy_timeout={sqlite_inline.INLINE_BUSY_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        # A write unit takes the file's write lock when it begins (waiting up to the busy
        # timeout), not at its first write: a deferred transaction that read before another
        # process committed could not write at all ("database is locked" at once, whatever the
        # busy timeout). Reads stay deferred and never block a writer (WAL).
        connection.exec_driver_sql(connection.get_execution_options().get(_SQLITE_BEGIN, "BEGIN"))


def _configure_postgresql(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        # A connection the server closed (restart, idle timeout) is seen by asyncpg as soon as its
        # socket reads the end of the stream: hand out another one instead. This is what a ping
        # would catch, without a round trip on every checkout (several per request).
        raw = getattr(dbapi_connection, "_connection", None)
        if raw is not None and raw.is_closed():
            raise DisconnectionError("the server closed this connection")


# -- outages --------------------------------------------------------------------------------------

outage_log = logging.getLogger("mlservice.dependencies")


class DatabaseHealth:
    """Whether the database was last seen reachable: one warning when it goes, one when it is back
    (not a traceback per request)."""

    def __init__(self) -> None:
        self.down = False

    def went_down(self, exc: BaseException) -> None:
        if not self.down:
            self.down = True
            outage_log.warning("database unreachable: %s: %s", type(exc).__name__, exc)

    def came_back(self) -> None:
        if self.down:
            self.down = False
            outage_log.warning("database reachable again")


def _watch_connections(engine: AsyncEngine, health: DatabaseHealth) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(_dbapi_connection: Any, _record: Any) -> None:
        health.came_back()


def make_engine(url: str, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        # Statements run on the loop's thread, not aiosqlite's (see mlservice.sqlite_inline).
        args, kwargs = make_url(url).get_dialect()().create_connect_args(make_url(url))
        engine = create_async_engine(url, echo=echo, async_creator=sqlite_inline.connect_with(args, kwargs))
        _configure_sqlite(engine)
        return engine
    engine = create_async_engine(url, echo=echo, pool_size=10, max_overflow=20, pool_recycle=1800)
    _configure_postgresql(engine)
    return engine


class Database:
    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.health = DatabaseHealth()
        _watch_connections(self.engine, self.health)
        self.sessionmaker = async_sessionmaker(
            self.engine.execution_options(**{_SQLITE_BEGIN: "BEGIN IMMEDIATE"})
            if self.is_sqlite
            else self.engine,
            expire_on_commit=False,
        )
        # Reads on PostgreSQL run without BEGIN/COMMIT (two round trips of the four a poll would
        # cost): each statement is its own snapshot. Anything that writes uses write=True.
        # On SQLite reads begin deferred (see _configure_sqlite).
        self.read_sessionmaker = async_sessionmaker(
            self.engine if self.is_sqlite else self.engine.execution_options(isolation_level="AUTOCOMMIT"),
            expire_on_commit=False,
        )
        self._sqlite_writer = asyncio.Lock() if self.is_sqlite else None
        self._driver_pool: asyncpg.Pool | None = None
        self._driver_pool_opening = asyncio.Lock()

    @asynccontextmanager
    async def session(
        self, *, write: bool = False, one_statement: bool = False
    ) -> AsyncIterator[AsyncSession]:
        """A unit of work: commits when the block ends, rolls back if it raises.

        ``one_statement`` (with ``write``): the unit of work writes with one statement, its last,
        which is atomic on its own: on PostgreSQL it runs without BEGIN and COMMIT (two round
        trips of three), its callbacks as any unit of work's; on SQLite it is a write unit like
        any other. The caller guarantees that nothing written before that statement needs
        rolling back with it (after-rollback callbacks still run if it, or anything, raises).
        """
        writer = self._sqlite_writer if write else None
        if writer is not None:
            await writer.acquire()
        transaction = write and not (one_statement and not self.is_sqlite)
        try:
            async with (self.sessionmaker if transaction else self.read_sessionmaker)() as session:
                session.info["database"] = self
                try:
                    yield session
                    pending = session.info.pop("before_commit", {})
                    for callback in pending.values():
                        await callback()
                    await session.commit()
                except BaseException as exc:
                    outage = not isinstance(exc, AppError) and is_outage(exc)
                    try:
                        await session.rollback()
                    except Exception:
                        if not outage:
                            raise
                    await _run(session.info.get("after_rollback", []))
                    if outage:
                        # Every surface answers it 503 with Retry-After, not 500 (see errors).
                        self.health.went_down(exc)
                        raise ServiceUnavailable("database") from exc
                    raise
                callbacks = session.info.get("after_commit", [])
        except OSError as exc:
            # Closing the session of a connection that died with the server.
            if not is_outage(exc):
                raise
            self.health.went_down(exc)
            raise ServiceUnavailable("database") from exc
        finally:
            if writer is not None:
                writer.release()
        await _run(callbacks)

    @asynccontextmanager
    async def driver(self) -> AsyncIterator[asyncpg.Connection]:
        """PostgreSQL only: a connection of the driver's own small pool, in autocommit, for
        :class:`DriverStatement` s that are each a unit of work by themselves (the worker's claim
        and settle). It has no commit hooks: what must follow the commit follows the block."""
        if self.is_sqlite:
            raise RuntimeError("driver connections are PostgreSQL's")
        try:
            pool = await self._open_driver_pool()
            async with pool.acquire() as connection:
                self.health.came_back()
                yield connection
        except Exception as exc:
            if isinstance(exc, AppError) or not is_outage(exc):
                raise
            self.health.went_down(exc)
            raise ServiceUnavailable("database") from exc

    async def _open_driver_pool(self) -> asyncpg.Pool:
        if self._driver_pool is None:
            async with self._driver_pool_opening:
                if self._driver_pool is None:
                    url = self.engine.url.set(drivername="postgresql")
                    self._driver_pool = await asyncpg.create_pool(
                        url.render_as_string(hide_password=False),
                        min_size=1,
                        max_size=10,
                        reset=_keep_session,
                    )
        return self._driver_pool

    async def dispose(self) -> None:
        if self._driver_pool is not None:
            await self._driver_pool.close()
            self._driver_pool = None
        await self.engine.dispose()


async def _keep_session(connection: asyncpg.Connection) -> None:
    # Driver statements change nothing in the session (no SET, LISTEN, advisory lock or cursor):
    # a connection goes back to the pool as it is, without the round trip of asyncpg's RESET ALL.
    # (asyncpg still rolls back a transaction left open.)
    return None


_DRIVER_DIALECT = PGDialect_asyncpg()  # type: ignore[no-untyped-call]


class DriverStatement:
    """A statement compiled once for PostgreSQL's driver, to run on a :meth:`Database.driver`
    connection: the hottest statements skip SQLAlchemy's execution (connection, result and type
    layers), which costs several times what the driver itself spends on them.

    Parameters reach the driver as given, without type processing: UUIDs, aware datetimes, lists
    for arrays, JSON as text. Rows come back as the driver's records (JSON columns as text).
    """

    def __init__(self, statement: ClauseElement) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=_DRIVER_DIALECT))
        self.sql = str(compiled)
        self._names = tuple(compiled.positiontup or ())
        # Values the statement binds itself (its literals); the caller gives the others.
        self._own = compiled.params

    async def fetch(self, connection: asyncpg.Connection, params: Mapping[str, Any]) -> list[asyncpg.Record]:
        args = [params[name] if name in params else self._own[name] for name in self._names]
        return list(await connection.fetch(self.sql, *args))


async def _run(callbacks: list[Callback]) -> None:
    for callback in callbacks:
        try:
            await callback()
        except Exception:
            # A failed publish is recovered by the sweeper; never turn a commit into an error.
            log.exception("post-transaction callback failed")
