"""Load generation for bench/scale.py: a lean HTTP/1.1 client, closed-loop job clients, process CPU.

The clients run on the same two cores as the service, so they must cost as little as possible: each
keeps one keep-alive connection and writes prebuilt request bytes (httpx costs several times more
CPU per request, which on this machine is CPU taken from the service being measured).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

TERMINAL = (b'"status":"succeeded"', b'"status":"failed"', b'"status":"canceled"')
LONG_POLL_S = 20
PASSWORD = "scale-bench-2026"  # noqa: S105 (throwaway accounts in throwaway databases)


class HTTPError(RuntimeError):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; requests on it are sequential."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._host_header = f"Host: {self.host}:{self.port}\r\n".encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, headers: bytes = b"", body: bytes = b"", *, retry: bool = False
    ) -> tuple[int, bytes]:
        """Send one request; ``headers`` are complete ``Name: value\\r\\n`` lines."""
        try:
            return await self._request(method, path, headers, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closed an idle keep-alive connection; only idempotent requests are retried.
            await self.close()
            if not retry:
                raise
            return await self._request(method, path, headers, body)

    async def _request(self, method: str, path: str, headers: bytes, body: bytes) -> tuple[int, bytes]:
        reader, writer = await self._connect()
        head = b"%s %s HTTP/1.1\r\n" % (method.encode(), path.encode())
        length = b"Content-Length: %d\r\n" % len(body) if body or method in ("POST", "PUT") else b""
        writer.write(head + self._host_header + headers + length + b"\r\n" + body)
        status_line = await reader.readline()
        if not status_line:
            raise asyncio.IncompleteReadError(b"", None)
        status = int(status_line.split(b" ", 2)[1])
        content_length = -1
        chunked = close = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                content_length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            data = b"".join(parts)
        elif content_length >= 0:
            data = await reader.readexactly(content_length)
        else:
            data = await reader.read()
            close = True
        if close:
            await self.close()
        return status, data


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, bytes]:
    """(body, Content-Type header line) of a multipart/form-data request."""
    boundary = uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    for name, (filename, data, media_type) in files.items():
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {media_type}\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()


# -- accounts -------------------------------------------------------------------------------------


async def make_user(base_url: str, n: int, credits: int) -> bytes:
    """Register, log in and top up one account; returns its Authorization header line."""
    conn = Connection(base_url)
    try:
        email = f"bench-{n}-{uuid.uuid4().hex[:8]}@example.com"
        body = json.dumps({"email": email, "password": PASSWORD}).encode()
        status, data = await conn.request(
            "POST", "/api/auth/register", b"Content-Type: application/json\r\n", body
        )
        if status != 201:
            raise HTTPError(f"register: {status} {data[:300]!r}")
        form = f"username={email}&password={PASSWORD}".encode()
        status, data = await conn.request(
            "POST", "/api/auth/jwt/login", b"Content-Type: application/x-www-form-urlencoded\r\n", form
        )
        if status != 200:
            raise HTTPError(f"login: {status} {data[:300]!r}")
        auth = f"Authorization: Bearer {json.loads(data)['access_token']}\r\n".encode()
        if credits > 0:
            status, data = await conn.request(
                "POST",
                "/api/wallet/refill",
                auth + b"Content-Type: application/json\r\n",
                json.dumps({"amount": credits}).encode(),
            )
            if status != 200:
                raise HTTPError(f"refill: {status} {data[:300]!r}")
        return auth
    finally:
        await conn.close()


async def make_users(base_url: str, count: int, credits: int, parallel: int = 4) -> list[bytes]:
    gate = asyncio.Semaphore(parallel)

    async def one(n: int) -> bytes:
        async with gate:
            return await make_user(base_url, n, credits)

    return list(await asyncio.gather(*(one(n) for n in range(count))))


# -- closed-loop clients ----------------------------------------------------------------------------


@dataclass
class Sample:
    """One request (or job) of one client; wall-clock times (time.time()) to compare with server stamps."""

    submitted: float  # before the request was sent
    accepted: float  # response to the submit (for jobs) or the whole request
    seen: float  # the poll that saw the job terminal (= accepted for one-shot requests)
    polls: int = 0
    ok: bool = True
    job: dict[str, Any] | None = None


@dataclass
class Cell:
    """What one run of N clients for a fixed time measured."""

    clients: int
    window_s: float
    samples: list[Sample]  # submitted within the window
    completed: int  # seen terminal within the window
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)  # seconds of CPU per process group
    db: dict[str, float] = field(default_factory=dict)  # deltas of pg_stat_database counters

    @property
    def rate(self) -> float:
        return self.completed / self.window_s

    def latencies_ms(self) -> list[float]:
        return [(s.seen - s.submitted) * 1000 for s in self.samples if s.ok]

    def p(self, q: float, values: Sequence[float] | None = None) -> float:
        return percentile(self.latencies_ms() if values is None else values, q)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Iterable[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else float("nan")


Step = Callable[[Connection, int], Awaitable[Sample]]


async def run_clients(
    base_url: str,
    clients: int,
    step: Step,
    *,
    warmup_s: float,
    window_s: float,
    on_window: Callable[[bool], Awaitable[None]] | None = None,
) -> Cell:
    """``clients`` loops of ``step`` for ``warmup_s`` + ``window_s``; each finishes its last step.

    Throughput counts steps that ended inside the window; latencies are those of steps that began
    inside it. ``on_window(True)`` / ``on_window(False)`` run at the window's start and end (to
    snapshot CPU counters).
    """
    stop = asyncio.Event()
    samples: list[Sample] = []
    errors = 0

    async def loop(i: int) -> None:
        nonlocal errors
        conn = Connection(base_url)
        try:
            while not stop.is_set():
                try:
                    samples.append(await step(conn, i))
                except (HTTPError, ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
                    errors += 1
                    if errors <= 3:
                        print(f"    client {i}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                    await conn.close()
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()

    tasks = [asyncio.create_task(loop(i)) for i in range(clients)]
    await asyncio.sleep(warmup_s)
    start = time.time()
    if on_window is not None:
        await on_window(True)
    await asyncio.sleep(window_s)
    end = time.time()
    if on_window is not None:
        await on_window(False)
    stop.set()
    await asyncio.gather(*tasks)
    window = end - start
    in_window = [s for s in samples if start <= s.submitted < end]
    completed = sum(1 for s in samples if s.ok and start <= s.seen < end)
    return Cell(clients, window, in_window, completed, errors)


def job_step(
    submit_body: bytes, content_type: bytes, auths: Sequence[bytes], poll_s: float, *, keep_job: bool = True
) -> Step:
    """A client of the jobs API: submit, poll GET /api/jobs/{id} every ``poll_s`` until terminal
    (``poll_s`` 0: long polling, GET /api/jobs/{id}?wait=LONG_POLL_S, answered when the job ends).

    Client ``i`` uses the account whose Authorization header line is ``auths[i]``.
    """

    async def step(conn: Connection, i: int) -> Sample:
        auth = auths[i]
        headers = auth + content_type
        submitted = time.time()
        status, data = await conn.request("POST", "/api/jobs", headers, submit_body)
        accepted = time.time()
        if status != 201:
            raise HTTPError(f"submit: {status} {data[:300]!r}")
        job_id = json.loads(data)["id"]
        polls = 0
        path = f"/api/jobs/{job_id}" if poll_s > 0 else f"/api/jobs/{job_id}?wait={LONG_POLL_S}"
        while True:
            if poll_s > 0:
                await asyncio.sleep(poll_s)
            status, data = await conn.request("GET", path, auth, retry=True)
            polls += 1
            if status != 200:
                raise HTTPError(f"poll: {status} {data[:300]!r}")
            if any(marker in data for marker in TERMINAL):
                break
        seen = time.time()
        job = json.loads(data)
        return Sample(
            submitted,
            accepted,
            seen,
            polls,
            ok=job["status"] == "succeeded",
            job=job if keep_job else None,
        )

    return step


# -- CPU accounting ---------------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def proc_stats() -> dict[int, tuple[int, str, float]]:
    """pid -> (ppid, comm, CPU seconds so far) for every process we can read."""
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        comm_end = raw.rfind(b")")
        comm = raw[raw.find(b"(") + 1 : comm_end].decode(errors="replace")
        fields = raw[comm_end + 2 :].split()
        # After the comm: state ppid ... utime (11th) stime (12th).
        stats[int(entry)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / _TICK)
    return stats


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def group_cpu(
    before: dict[int, tuple[int, str, float]],
    after: dict[int, tuple[int, str, float]],
    groups: Mapping[str, Sequence[int]],
    comm_groups: Mapping[str, str] | None = None,
) -> dict[str, float]:
    """CPU seconds each group used between two :func:`proc_stats` snapshots.

    A group is process trees (its pids and all their descendants) or, in ``comm_groups``, every
    process of one name. Processes born in between count whole; those that died are lost.
    """
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in after.items():
        children.setdefault(ppid, []).append(pid)

    def delta(pid: int) -> float:
        old = before.get(pid)
        new = after[pid]
        return new[2] - (old[2] if old is not None and old[1] == new[1] else 0.0)

    result: dict[str, float] = {}
    for name, roots in groups.items():
        total, todo, seen = 0.0, list(roots), set()
        while todo:
            pid = todo.pop()
            if pid in seen or pid not in after:
                continue
            seen.add(pid)
            total += delta(pid)
            todo.extend(children.get(pid, []))
        result[name] = total
    for name, comm in (comm_groups or {}).items():
        result[name] = sum(delta(pid) for pid, (_, c, _) in after.items() if c == comm)
    return result


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK
