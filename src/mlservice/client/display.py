"""What the client prints: tables on stdout, a job's progress on stderr."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, right: Sequence[str] = ()) -> str:
    """Rows under their headers, columns padded to their widest cell; ``right`` columns (numbers)
    aligned right."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if header in right else cell.ljust(width)
            for cell, width, header in zip(row, widths, headers, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def job_state(job: Mapping[str, Any]) -> str:
    """A job's status with what its model last reported while running: ``running  42%  step 3 of 7``."""
    status = str(job.get("status") or "")
    progress = job.get("progress")
    if status != "running" or not isinstance(progress, Mapping):
        return status
    parts = [status]
    fraction = progress.get("fraction")
    if isinstance(fraction, int | float):
        parts.append(f"{math.floor(min(max(fraction, 0.0), 1.0) * 100):3d}%".strip())
    message = progress.get("message")
    if isinstance(message, str) and message.strip():
        parts.append(" ".join(message.split())[:80])
    return "  ".join(parts)


def local_time(value: str | None) -> str:
    """An API timestamp as local time to the second (the date only when it is not today)."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value).astimezone()
    except ValueError:
        return value
    if moment.date() == datetime.now().astimezone().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


class Progress:
    """A job's status (with its progress while running, see :func:`job_state`) and the time since
    it was submitted.

    On a terminal: one line, redrawn in place a few times a second by a thread (the main thread is
    blocked in a long poll meanwhile). Elsewhere (a log, a pipe): a plain line per change.
    """

    SPINNER = "-\\|/"
    INTERVAL_S = 0.2

    def __init__(self, stream: TextIO, job_id: str, status: str = "queued") -> None:
        self.stream = stream
        self.job_id = job_id
        self.status = status
        self.started = time.monotonic()
        self.interactive = stream.isatty()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._frame = 0
        if self.interactive:
            self._thread = threading.Thread(target=self._tick, name="mlservice-progress", daemon=True)
            self._thread.start()
        else:
            self._line()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def update(self, status: str) -> None:
        with self._lock:
            changed = status != self.status
            self.status = status
            if self.interactive:
                self._redraw()
            elif changed:
                self._line()

    def close(self, summary: str | None = None) -> None:
        """Stop redrawing; leave ``summary`` (or the last status) as the final line."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self.interactive:
                self.stream.write("\r\x1b[K")
            if summary is not None:
                self.stream.write(summary + "\n")
            self.stream.flush()

    def _line(self) -> None:
        self.stream.write(f"job {self.job_id}: {self.status} ({self.elapsed_s:.1f} s)\n")
        self.stream.flush()

    def _redraw(self) -> None:
        spinner = self.SPINNER[self._frame % len(self.SPINNER)]
        self.stream.write(f"\r\x1b[K{spinner} job {self.job_id}  {self.status}  {self.elapsed_s:.1f} s")
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stopped.wait(self.INTERVAL_S):
            with self._lock:
                if self._stopped.is_set():
                    return
                self._frame += 1
                self._redraw()
