"""News of jobs between processes: finished, changed (progress), canceled.

A job finishes, reports progress or is canceled in whatever process did it. The transaction that
does it announces it: in this process right after the commit, and on PostgreSQL also with
``pg_notify`` (delivered to every listener when, and only if, the transaction commits). Each
process keeps one connection that LISTENs on the channels it needs and wakes its local parties:

* waiters on a job's finish (``GET /api/jobs/{id}?wait=N``, ``Prefer: wait``): finished;
* watchers of a job (its event stream): finished and changed;
* the workers running a job: canceled (they stop its predictor).

A wake-up is only a hint to look again: whoever is woken re-reads the job from the database, so a
lost or duplicate notification costs at most a wait until the next look, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import asyncpg
from sqlalchemy import String, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.db import Database, after_commit, before_commit

log = logging.getLogger(__name__)

MAX_RECONNECT_DELAY_S = 5.0


class Channel(enum.StrEnum):
    finished = "mlservice_job_finished"
    changed = "mlservice_job_changed"
    canceled = "mlservice_job_canceled"


# The channel of finishes, which batch statements also notify in SQL.
CHANNEL = Channel.finished.value

# Database -> the JobEvents of the process using it, for announcements made deep in a transaction.
_by_database: weakref.WeakKeyDictionary[Database, JobEvents] = weakref.WeakKeyDictionary()

CancelListener = Callable[[uuid.UUID], None]


class JobEvents:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiters: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._watchers: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._cancel_listeners: list[CancelListener] = []
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._listener: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        _by_database[db] = self

    async def start(self, channels: Iterable[Channel] = (Channel.finished, Channel.changed)) -> None:
        """Listen on ``channels`` for what other processes announce (PostgreSQL; on SQLite
        everything happens in this process)."""
        wanted = tuple(channels)
        if not self.db.is_sqlite and self._listener is None and wanted:
            self._listener = asyncio.create_task(self._listen_forever(wanted), name="job-events-listener")

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
        with _registered(self._waiters, job_id) as event:
            yield event

    @contextlib.contextmanager
    def watcher(self, job_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set when ``job_id`` may have changed (started, progressed, finished);
        register *before* reading the job."""
        with _registered(self._watchers, job_id) as event:
            yield event

    def on_canceled(self, listener: CancelListener) -> None:
        """Call ``listener(job_id)`` when a job may have been canceled (from this event loop)."""
        self._cancel_listeners.append(listener)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` when the listening connection came back: news may have been missed."""
        self._reconnect_listeners.append(listener)

    def finished(self, job_id: uuid.UUID) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()
        self.changed(job_id)

    def changed(self, job_id: uuid.UUID) -> None:
        for event in self._watchers.get(job_id, ()):
            event.set()

    def canceled(self, job_id: uuid.UUID) -> None:
        for listener in self._cancel_listeners:
            try:
                listener(job_id)
            except Exception:
                log.exception("a cancel listener failed for job %s", job_id)

    def _wake_all(self) -> None:
        for registry in (self._waiters, self._watchers):
            for events in registry.values():
                for event in events:
                    event.set()

    async def _listen_forever(self, channels: tuple[Channel, ...]) -> None:
        url = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.5
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(url)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _connection, done=closed: done.set())
                for channel in channels:
                    await connection.add_listener(channel.value, self._on_notification)
                self.listening.set()
                # Whatever happened while nobody listened: let every party look again.
                self._wake_all()
                for listener in self._reconnect_listeners:
                    listener()
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

    def _on_notification(self, _connection: object, _pid: int, channel: str, payload: str) -> None:
        wake = {
            Channel.finished.value: self.finished,
            Channel.changed.value: self.changed,
            Channel.canceled.value: self.canceled,
        }.get(channel)
        if wake is None:
            return
        for item in payload.split(","):
            try:
                job_id = uuid.UUID(item)
            except ValueError:
                continue
            wake(job_id)


@contextlib.contextmanager
def _registered(registry: dict[uuid.UUID, set[asyncio.Event]], job_id: uuid.UUID) -> Iterator[asyncio.Event]:
    event = asyncio.Event()
    registry.setdefault(job_id, set()).add(event)
    try:
        yield event
    finally:
        waiting = registry.get(job_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del registry[job_id]


async def announce_finished(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Tell waiters and watchers, once this unit of work commits, that ``job_id`` reached a final
    state.

    The ids a transaction finishes are gathered and announced together: one ``pg_notify`` and one
    local wake-up per transaction, however many jobs a batch settled.
    """
    _announce(session, Channel.finished, job_id)


async def announce_changed(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Tell the job's watchers, once this unit of work commits, that it changed (its progress)."""
    _announce(session, Channel.changed, job_id)


async def announce_canceled(session: AsyncSession, job_id: uuid.UUID) -> None:
    """Tell the worker running ``job_id`` (whichever process it is in), once this unit of work
    commits, that the job was canceled, so that its predictor stops. Announce the finish too."""
    _announce(session, Channel.canceled, job_id)


def _announce(session: AsyncSession, channel: Channel, job_id: uuid.UUID) -> None:
    database = session.info.get("database")
    if not isinstance(database, Database):
        return
    key = f"announce:{channel.value}"
    job_ids: list[uuid.UUID] | None = session.info.get(key)
    if job_ids is None:
        job_ids = session.info[key] = []
        gathered = job_ids
        if not database.is_sqlite:

            async def notify() -> None:
                for payload in _payloads(gathered):
                    await session.execute(_NOTIFY, {"channel": channel.value, "payload": payload})

            before_commit(session, key, notify)
        events = _by_database.get(database)
        if events is not None:
            wake = {
                Channel.finished: events.finished,
                Channel.changed: events.changed,
                Channel.canceled: events.canceled,
            }[channel]

            async def wake_here() -> None:
                for job_id in gathered:
                    wake(job_id)

            after_commit(session, wake_here)
    job_ids.append(job_id)


def announce_committed(database: Database, job_ids: Iterable[uuid.UUID]) -> None:
    """Wake this process's waiters on jobs that a committed write finished outside an ORM unit
    of work (on PostgreSQL such a write notifies the other processes itself, in SQL)."""
    events = _by_database.get(database)
    if events is not None:
        for job_id in job_ids:
            events.finished(job_id)


def announce_changed_here(database: Database, job_ids: Iterable[uuid.UUID]) -> None:
    """Wake this process's watchers of jobs that changed without a notification of their own (a
    claim: the other processes' watchers look again now and then while a job is queued)."""
    events = _by_database.get(database)
    if events is not None:
        for job_id in job_ids:
            events.changed(job_id)


_NOTIFY = select(func.pg_notify(bindparam("channel", type_=String), bindparam("payload", type_=String)))
# PostgreSQL refuses notification payloads of 8000 bytes or more: ids go in groups of this many.
IDS_PER_PAYLOAD = 7000 // 37


def _payloads(job_ids: list[uuid.UUID]) -> Iterator[str]:
    for start in range(0, len(job_ids), IDS_PER_PAYLOAD):
        yield ",".join(str(job_id) for job_id in job_ids[start : start + IDS_PER_PAYLOAD])
