"""Wake-ups for requests waiting on a job (``GET /api/jobs/{id}?wait=N``).

A job finishes in whatever process ran it. The transaction that finishes it announces it: in
this process right after the commit, and on PostgreSQL also with ``pg_notify`` (delivered to every
listener when, and only if, the transaction commits). Each API process on PostgreSQL keeps one
connection that LISTENs and wakes its local waiters. A wake-up is only a hint to look again: the
waiter always re-reads the job from the database, so a lost or duplicate notification costs at
most a wait until the timeout, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import asyncpg
from sqlalchemy import String, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit, before_commit

log = logging.getLogger(__name__)

CHANNEL = "mlservice_job_finished"
MAX_RECONNECT_DELAY_S = 5.0

# Database -> the JobEvents of the app using it, for announcements made deep in a transaction.
_by_database: weakref.WeakKeyDictionary[Database, JobEvents] = weakref.WeakKeyDictionary()


class JobEvents:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        _by_database[db] = self

    async def start(self) -> None:
        if not self.db.is_sqlite and self._listener is None:
            self._listener = asyncio.create_task(self._listen_forever(), name="job-events-listener")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self._wake_all()

    @contextlib.contextmanager
    def waiter(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when ``job_id`` may have finished; register *before* checking the job."""
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(job_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiters[job_id]

    def finished(self, job_id: uuid.UUID) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.set()

    async def _listen_forever(self) -> None:
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.5
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(url)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _connection, done=closed: done.set())
                await connection.add_listener(CHANNEL, self._on_notification)
                self.listening.set()
                # Whatever finished while nobody listened: let every waiter look again.
                self._wake_all()
                delay = 0.5
                await closed.wait()
                log.warning("the job events connection to PostgreSQL closed; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cannot listen for job events (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY_S)
            finally:
                self.listening.clear()
                if connection is not None and not connection.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 5)

    def _on_notification(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        for item in payload.split(","):
            try:
                job_id = uuid.UUID(item)
            except ValueError:
                continue
            self.finished(job_id)


async def announce_finished(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Tell waiters, once this unit of work commits, that ``job_id`` reached a final state.

    The ids a transaction finishes are gathered and announced together: one ``pg_notify`` and one
    local wake-up per transaction, however many jobs a batch settled.
    """
    database = session.info.get("database")
    if not isinstance(database, Database):
        return
    finished: list[uuid.UUID] | None = session.info.get(_FINISHED)
    if finished is None:
        finished = session.info[_FINISHED] = []
        if not database.is_sqlite:

            async def notify() -> None:
                for payload in _payloads(finished):
                    await session.execute(_NOTIFY, {"payload": payload})

            before_commit(session, _FINISHED, notify)
        events = _by_database.get(database)
        if events is not None:

            async def wake() -> None:
                for job_id in finished:
                    events.finished(job_id)

            after_commit(session, wake)
    finished.append(job_id)


def announce_committed(database: Database, job_ids: Iterable[uuid.UUID]) -> None:
    """Wake this process's waiters on jobs that a committed write finished outside an ORM unit
    of work (on PostgreSQL such a write notifies the other processes itself, in SQL)."""
    events = _by_database.get(database)
    if events is not None:
        for job_id in job_ids:
            events.finished(job_id)


_FINISHED = "finished_jobs"
_NOTIFY = select(func.pg_notify(CHANNEL, bindparam("payload", type_=String)))
# PostgreSQL refuses notification payloads of 8000 bytes or more: ids go in groups of this many.
IDS_PER_PAYLOAD = 7000 // 37


def _payloads(job_ids: list[uuid.UUID]) -> Iterator[str]:
    for start in range(0, len(job_ids), IDS_PER_PAYLOAD):
        yield ",".join(str(job_id) for job_id in job_ids[start : start + IDS_PER_PAYLOAD])
