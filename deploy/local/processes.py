"""Child processes of a local deployment, the ports they listen on, and the HTTP probes that say
when they are ready (standard library only: httpx is a development dependency)."""

from __future__ import annotations

import contextlib
import http.client
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class DeploymentError(RuntimeError):
    """A process of the deployment could not be started or did not become ready."""


@dataclass
class ManagedProcess:
    """One child process and the log file its stdout and stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # Where this run's output starts in the (appended) log file.
    log_offset: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """What this run of the process has written so far."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def send(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; returns the exit status."""
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop within %.0f s: killing it", self.name, self.pid, timeout)
            self.popen.kill()
            return self.popen.wait()


def spawn(
    name: str, command: Sequence[str], env: Mapping[str, str], logs_dir: Path, cwd: Path
) -> ManagedProcess:
    """Start ``command`` with its stdout and stderr appended to ``<logs_dir>/<name>.log``."""
    log_path = logs_dir / f"{name}.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as handle:
        popen = subprocess.Popen(  # noqa: S603
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=dict(env),
            # Not in our process group: a Ctrl-C reaches the launcher only, which then stops
            # the children in order (nginx, APIs, workers finishing their batches).
            start_new_session=True,
            # Settings read .env from the working directory: the environment alone decides.
            cwd=cwd,
        )
    log.debug("started %s (pid %d): %s", name, popen.pid, " ".join(command))
    return ManagedProcess(name, popen, log_path, offset)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0, limit: int | None = 200) -> tuple[int | None, str]:
    """Status and body (its first ``limit`` bytes) of a GET, or (None, why not)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        return response.status, response.read(limit).decode("utf-8", "replace")
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def wait_http(url: str, procs: Sequence[ManagedProcess], what: str, timeout: float) -> None:
    """Until ``url`` answers 200; fails at once when one of ``procs`` (the ones that should answer
    it) exits, and after ``timeout`` seconds with their logs' tails."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        for proc in procs:
            if not proc.running:
                raise DeploymentError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        status, last = http_get(url)
        if status == 200:
            return
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
            raise DeploymentError(f"{what} not ready at {url} after {timeout} s ({last})\n{tails}")
        time.sleep(0.1)
