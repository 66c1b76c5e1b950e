"""The jobs a worker is running, as their owners see them live: progress, cancels, log lines.

Each claimed attempt gets a :class:`~mlservice.predictors.base.JobControl`. Its predictor reports
progress through it from its thread; the reports are coalesced here and written every
``PROGRESS_INTERVAL_S`` (only the latest per job, guarded by the attempt), each write announced to
the job's watchers (its event streams). A cancel, heard from the job events of any process or
found by looking at the jobs' rows, sets the control: the predictor stops at its next check.

Log lines the predictors write (loggers under ``mlservice.predictors``) while they run a job alone
are kept and written with its outcome (``/v1``'s ``logs``). In a batch of several jobs, of several
owners perhaps, a line cannot be told apart from the others': none is kept, so that no job shows
what another's input made the model say.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from mlservice.db import Database
from mlservice.jobs import live_repository
from mlservice.jobs.events import announce_changed
from mlservice.jobs.tables import PROGRESS_MESSAGE_CHARS, JobStatus
from mlservice.predictors.base import JobControl
from mlservice.types import utcnow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
# What a job keeps of its predictor's log lines: the first lines up to this size.
MAX_LOG_CHARS = 64 * 1024
PREDICTOR_LOGGERS = "mlservice.predictors"


@dataclass
class _Running:
    attempt: int
    control: JobControl
    deadline: asyncio.TimerHandle | None = None


class LiveJobs:
    """The controls of the attempts one executor is running, and the writer of their progress."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._running: dict[uuid.UUID, _Running] = {}
        self._progress: dict[uuid.UUID, tuple[int, float, str]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checks: set[asyncio.Task[None]] = set()
        install_log_capture()

    def start(self, job_id: uuid.UUID, attempt: int, cancel_at: datetime | None) -> JobControl:
        """A control for a claimed attempt; past ``cancel_at`` it is canceled."""
        loop = self._loop = asyncio.get_running_loop()

        def report(fraction: float, message: str) -> None:
            # From the predictor's thread: over to the event loop.
            loop.call_soon_threadsafe(self._reported, job_id, attempt, fraction, message)

        control = JobControl(report)
        running = _Running(attempt, control)
        if cancel_at is not None:
            delay = (cancel_at - utcnow()).total_seconds()
            running.deadline = loop.call_later(max(delay, 0.0), control.cancel)
        self._running[job_id] = running
        return control

    def done(self, job_id: uuid.UUID) -> None:
        running = self._running.pop(job_id, None)
        if running is not None and running.deadline is not None:
            running.deadline.cancel()
        self._progress.pop(job_id, None)

    def control(self, job_id: uuid.UUID) -> JobControl | None:
        running = self._running.get(job_id)
        return None if running is None else running.control

    def cancel(self, job_id: uuid.UUID) -> None:
        """The job may have been canceled (a notification): stop its predictor."""
        running = self._running.get(job_id)
        if running is not None and not running.control.canceled:
            log.info("job %s was canceled while running; stopping it", job_id)
            running.control.cancel()

    def look_again(self) -> None:
        """News may have been missed (the listening connection was away): check the rows."""
        task = asyncio.get_running_loop().create_task(self.check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def check(self) -> None:
        """Cancel the controls of attempts that no longer own their job (canceled, swept)."""
        if not self._running:
            return
        try:
            async with self.db.session() as session:
                now = await live_repository.statuses(session, list(self._running))
        except Exception:
            log.warning("could not look at the running jobs", exc_info=True)
            return
        for job_id, running in list(self._running.items()):
            status, attempt = now.get(job_id, (None, None))
            if status != JobStatus.running or attempt != running.attempt:
                self.cancel(job_id)

    async def stop(self) -> None:
        for task in [self._flusher, *self._checks]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._flusher = None

    # -- progress ----------------------------------------------------------------------------

    def _reported(self, job_id: uuid.UUID, attempt: int, fraction: float, message: str) -> None:
        running = self._running.get(job_id)
        if running is None or running.attempt != attempt:
            return
        self._progress[job_id] = (attempt, fraction, message[:PROGRESS_MESSAGE_CHARS])
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon(), name="job-progress")

    async def _flush_soon(self) -> None:
        while self._progress:
            await asyncio.sleep(PROGRESS_INTERVAL_S)
            reports, self._progress = self._progress, {}
            try:
                async with self.db.session(write=True) as session:
                    for job_id, (attempt, fraction, message) in sorted(reports.items()):
                        if await live_repository.record_progress(
                            session, job_id, attempt, fraction, message or None
                        ):
                            await announce_changed(session, job_id)
            except Exception:
                # Progress is news, not a result: the next report writes the latest again.
                log.warning("could not write the progress of %d jobs", len(reports), exc_info=True)


# -- log lines ------------------------------------------------------------------------------------

_capturing: contextvars.ContextVar[list[list[str]] | None] = contextvars.ContextVar(
    "mlservice_job_logs", default=None
)


@contextlib.contextmanager
def capture_logs(count: int) -> Iterator[list[list[str]]]:
    """Within the block (and the threads it starts through anyio, which copy the context), what
    the predictors log is kept: one list of lines per job of the batch, in order (empty for a
    batch of several, see above)."""
    buffers: list[list[str]] = [[] for _ in range(count)]
    token = _capturing.set(buffers)
    try:
        yield buffers
    finally:
        _capturing.reset(token)


def joined(lines: list[str]) -> str | None:
    return "\n".join(lines) if lines else None


class _JobLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        buffers = _capturing.get()
        if buffers is None or len(buffers) != 1:
            return
        try:
            line = self.format(record)
        except Exception:
            return
        (lines,) = buffers
        if sum(len(kept) + 1 for kept in lines) + len(line) <= MAX_LOG_CHARS:
            lines.append(line)


_handler: _JobLogHandler | None = None


def install_log_capture() -> None:
    global _handler
    if _handler is None:
        _handler = _JobLogHandler(logging.INFO)
        _handler.setFormatter(logging.Formatter("%(message)s"))
        logger = logging.getLogger(PREDICTOR_LOGGERS)
        logger.addHandler(_handler)
        if logger.getEffectiveLevel() > logging.INFO:
            # Their info lines are the job's logs, whatever the process prints of them.
            logger.setLevel(logging.INFO)
