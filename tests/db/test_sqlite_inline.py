"""SQLite runs on the event loop's thread (``mlservice.sqlite_inline``): a writer that meets another
process's write lock waits without holding up the loop, and gives up after the busy timeout."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from mlservice import sqlite_inline
from mlservice.db import Database


def hold_write_lock(path: Path, seconds: float, held: threading.Event) -> None:
    """Another writer of the file (as another process would be), for ``seconds``."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    held.set()
    time.sleep(seconds)
    other.execute("COMMIT")
    other.close()


async def ticks_while(work: asyncio.Future[object] | asyncio.Task[object]) -> int:
    count = 0
    while not work.done():
        await asyncio.sleep(0.01)
        count += 1
    return count


@pytest.fixture
async def database(tmp_path: Path) -> Database:
    path = tmp_path / "inline.db"
    sqlite3.connect(path).execute("CREATE TABLE t (n INTEGER)").connection.close()
    return Database(f"sqlite+aiosqlite:///{path}")


async def test_a_writer_waits_for_another_process_off_the_loop(database: Database, tmp_path: Path) -> None:
    held = threading.Event()
    other = threading.Thread(target=hold_write_lock, args=(tmp_path / "inline.db", 0.4, held))
    other.start()
    await asyncio.to_thread(held.wait)

    async def write() -> None:
        async with database.session(write=True) as session:
            await session.execute(text("INSERT INTO t VALUES (2)"))

    started = time.monotonic()
    task = asyncio.ensure_future(write())
    ticks = await ticks_while(task)
    await task
    waited = time.monotonic() - started
    other.join()
    assert waited >= 0.3  # it did wait for the other writer...
    assert ticks >= 15  # ...while the loop went on running other tasks
    async with database.session() as session:
        assert sorted((await session.execute(text("SELECT n FROM t"))).scalars()) == [1, 2]
    await database.dispose()


async def test_a_writer_gives_up_after_the_busy_timeout(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_inline, "BUSY_TIMEOUT_S", 0.2)
    held = threading.Event()
    other = threading.Thread(target=hold_write_lock, args=(tmp_path / "inline.db", 1.0, held))
    other.start()
    await asyncio.to_thread(held.wait)
    started = time.monotonic()
    with pytest.raises(Exception, match="locked"):
        async with database.session(write=True) as session:
            await session.execute(text("INSERT INTO t VALUES (3)"))
    assert 0.2 <= time.monotonic() - started < 0.9
    other.join()
    async with database.session() as session:
        assert list((await session.execute(text("SELECT n FROM t"))).scalars()) == [1]
    await database.dispose()
