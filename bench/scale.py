"""Benchmark: scaling out the image classifier, against a raw loop, a naive server and Celery.

    .venv/bin/python bench/scale.py [--quick] [--configs raw,naive,a,b,c,noop,celery] [--clients 1,8,32]
                                    [--batching on,off] [--window 10] [--poll-ms 10] [--no-long-poll]
                                    [--relaxed-poll-ms 100] [--backlog 400]

Each client submits a JPEG job (POST /api/jobs), polls GET /api/jobs/{id} every --poll-ms until the
job is terminal, then submits the next one; N clients, one account each, run for a warm-up and then
a measured window. jobs/s counts jobs seen terminal inside the window; latencies (submit -> the
poll that saw the job terminal) are those of jobs submitted inside it; "done" latencies end at the
job's own finished_at stamp instead (no poll delay). Two more cells per configuration (1 and the
most clients, "long") long-poll instead (GET /api/jobs/{id}?wait=20: answered when the job ends):
at 10 ms, 32 clients' polls alone can saturate 2 cores. A backlog cell then submits jobs without
polling and times how fast the workers empty the queue (the saturated service, no client load).

Configurations, each with dynamic batching on and off (MLSERVICE_BATCHING):
  a  the embedded default: one `mlservice serve` process, SQLite, in-process worker
  b  PostgreSQL + RabbitMQ: nginx -> 1 API process, 1 `mlservice worker` (LocalDeployment)
  c  PostgreSQL + RabbitMQ: nginx -> 2 API processes, 2 workers (LocalDeployment)
  (c1, on request: nginx -> 1 API process, 2 workers)
Baselines: the raw pipeline (the classifier's decode + preprocess + its onnxruntime session, by
hand, in a plain loop), a naive FastAPI server (bench/naive_server.py) under the same clients, a
no-op predictor (bench/noop.py, served by unmodified mlservice processes through an entry point)
in b's layout, and a Celery no-op task over the same RabbitMQ (bench/celery_noop.py).

Everything (clients included) shares this machine's cores; the CPU table says who used them and
how much went to processes outside the benchmark (other people's work makes a cell noisy: rerun
it with --configs/--clients/--batching). Needs PostgreSQL (MLSERVICE_BENCH_PG, default
postgres@127.0.0.1:5432, trust), RabbitMQ (MLSERVICE_BENCH_AMQP, default guest:guest@127.0.0.1:5672,
and `rabbitmqctl` for vhosts), nginx (LocalDeployment installs it when missing) and celery (the
`bench` extra). Each configuration gets a database and a vhost of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402
import uvloop  # noqa: E402
from deploy.local import LocalDeployment  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.loadgen import Cell, Connection, Sample, median, percentile  # noqa: E402
from bench.noop import NoOp, install_plugin  # noqa: E402
from mlservice.predictors.base import PredictInput  # noqa: E402
from mlservice.predictors.image_classifier import ImageClassifier, preprocess  # noqa: E402

MODEL = "image-classification"
PG = os.environ.get("MLSERVICE_BENCH_PG", "postgres@127.0.0.1:5432")
AMQP = os.environ.get("MLSERVICE_BENCH_AMQP", "guest:guest@127.0.0.1:5672")
CREDITS = 100_000  # one top-up per account (MLSERVICE_MAX_REFILL_AMOUNT's default)


# -- inputs and the model cache ---------------------------------------------------------------------


def chelsea_jpeg() -> bytes:
    """skimage's cat (451x300), as bench/jobs.py uses it."""
    buf = io.BytesIO()
    pixels = skdata.chelsea()  # type: ignore[no-untyped-call]
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def model_cache() -> Path:
    """var/test-models when the tests built it, else var/models; prepared once (like the tests)."""
    env = os.environ.get("MLSERVICE_BENCH_MODEL_CACHE")
    candidates = [Path(env)] if env else [ROOT / "var" / "test-models", ROOT / "var" / "models"]
    for cache in candidates:
        if ImageClassifier(cache).is_prepared():
            return cache.resolve()
    cache = candidates[0]
    cache.mkdir(parents=True, exist_ok=True)
    ImageClassifier(cache).prepare()
    return cache.resolve()


# -- processes, databases, vhosts -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 30.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def spawn(name: str, command: Sequence[str], env: dict[str, str], cwd: Path, logs: Path) -> Child:
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    return Child(name, popen, log)


async def wait_http(url: str, child: Child | None, path: str = "/ready", limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        if child is not None and child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.popen.returncode}:\n{child.tail()}")
        conn = Connection(url)
        try:
            status, _ = await conn.request("GET", path)
            if status == 200:
                return
        except OSError:
            pass
        finally:
            await conn.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after {limit_s} s:\n{child.tail() if child else ''}")
        await asyncio.sleep(0.2)


def mlservice_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVICE_")}
    env.update({"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "OPENBLAS_NUM_THREADS": "1"})
    # A load generator is many requests from one address by design.
    env["MLSERVICE_RATE_LIMITS_ENABLED"] = "false"
    # The backlog cells queue thousands of jobs from eight accounts on purpose: no backpressure caps.
    env["MLSERVICE_MAX_UNFINISHED_JOBS_PER_USER"] = "0"
    env["MLSERVICE_MAX_QUEUED_JOBS_PER_MODEL"] = "0"
    env.update(values)
    return env


@contextlib.asynccontextmanager
async def pg_database(prefix: str) -> AsyncIterator[str]:
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = await asyncpg.connect(f"postgresql://{PG}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(f"postgresql://{PG}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def rabbitmqctl(*args: str) -> None:
    """Run rabbitmqctl, retrying for a while: other people's tests restart the broker at times."""
    for attempt in range(10):
        result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120)
        if result.returncode == 0:
            return
        time.sleep(min(2.0 * (attempt + 1), 10.0))
    raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stdout}{result.stderr}")


@contextlib.contextmanager
def amqp_vhost(prefix: str) -> Iterator[str]:
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, AMQP.split(":")[0], ".*", ".*", ".*")
    try:
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


async def pg_backend_pids(database: str) -> list[int]:
    conn = await asyncpg.connect(f"postgresql://{PG}/postgres")
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
    finally:
        await conn.close()
    return [int(r["pid"]) for r in rows]


# -- a running service and its CPU accounting -------------------------------------------------------


@dataclass
class Target:
    """Where clients go, and which processes to charge CPU to."""

    url: str
    groups: Callable[[], Awaitable[dict[str, list[int]]]]
    comm_groups: dict[str, str] = field(default_factory=dict)
    workers: int = 1  # processes running jobs


class CpuMeter:
    """CPU used during a cell's window: the target's process groups, this client, the whole machine."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.delta: dict[str, float] = {}
        self._groups: dict[str, list[int]] = {}
        self._before: dict[int, tuple[int, str, float]] = {}
        self._self = self._machine = 0.0

    async def __call__(self, starting: bool) -> None:
        if starting:
            self._groups = await self.target.groups()
            self._before = loadgen.proc_stats()
            self._self, self._machine = loadgen.self_cpu(), loadgen.machine_busy()
            return
        after = loadgen.proc_stats()
        client, machine = loadgen.self_cpu() - self._self, loadgen.machine_busy() - self._machine
        groups = await self.target.groups()
        merged = {name: sorted(set(pids) | set(groups.get(name, []))) for name, pids in self._groups.items()}
        self.delta = loadgen.group_cpu(self._before, after, merged, self.target.comm_groups)
        self.delta["bench client"] = client
        self.delta["machine"] = machine


# -- results ------------------------------------------------------------------------------------------


@dataclass
class Row:
    config: str
    batching: str
    cell: Cell
    poll_ms: float = float("nan")

    @property
    def jobs(self) -> list[dict[str, Any]]:
        return [s.job for s in self.cell.samples if s.job is not None and s.ok]


def stamp(value: str | None) -> float:
    return datetime.fromisoformat(value).timestamp() if value else float("nan")


def mean_batch(jobs: list[dict[str, Any]]) -> float:
    """Jobs per batch: a worker claims a batch with one timestamp (started_at) for all of it."""
    starts = {job["started_at"] for job in jobs if job.get("started_at")}
    return len(jobs) / len(starts) if starts else float("nan")


def breakdown(row: Row) -> dict[str, float]:
    """Medians (ms) of the phases of a job, from the client's clock and the job's own timestamps."""
    samples = [s for s in row.cell.samples if s.job is not None and s.ok]
    phases: dict[str, list[float]] = {
        "submit req": [],
        "queued": [],
        "running": [],
        "model": [],
        "to seen": [],
    }
    for s in samples:
        job = s.job
        assert job is not None
        created, started, finished = (
            stamp(job["created_at"]),
            stamp(job["started_at"]),
            stamp(job["finished_at"]),
        )
        phases["submit req"].append((s.accepted - s.submitted) * 1000)
        phases["queued"].append((started - created) * 1000)
        phases["running"].append((finished - started) * 1000)
        phases["model"].append(float(job.get("processing_ms") or 0.0))
        phases["to seen"].append((s.seen - finished) * 1000)
    return {name: median(values) for name, values in phases.items()}


def done_latencies(row: Row) -> list[float]:
    """submit -> the worker's finished_at stamp (independent of the poll interval)."""
    return [
        (stamp(s.job["finished_at"]) - s.submitted) * 1000
        for s in row.cell.samples
        if s.job is not None and s.ok
    ]


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"


# -- benchmark sections -----------------------------------------------------------------------------


@dataclass
class Options:
    clients: list[int]
    warmup_s: float
    window_s: float
    poll_s: float
    configs: list[str]
    batching: list[bool]
    raw_rounds: int
    noop_clients: list[int]
    relaxed_poll_s: float
    celery_durable: list[bool]
    backlog: int
    long_poll: bool


def bench_raw(cache: Path, jpeg: bytes, rounds: int) -> dict[int, tuple[float, float, float, float]]:
    """batch size -> (p50, p95 ms per batch, mean images/s, CPU ms per image): the classifier's own
    steps called by hand."""
    classifier = ImageClassifier(cache)
    classifier.load()
    session = classifier._session
    names = ([classifier._output_name], classifier._input_name)
    results: dict[int, tuple[float, float, float, float]] = {}
    for size in (1, 4, 8):
        items = [PredictInput(data=jpeg, text=None, params={"top_k": 5}) for _ in range(size)]

        def run(items: list[PredictInput] = items) -> None:
            images = [classifier._decode(item).image for item in items]
            logits = session.run(names[0], {names[1]: preprocess(images)})[0]
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = exp / exp.sum(axis=1, keepdims=True)
            np.argsort(-probabilities, axis=1, kind="stable")[:, :5]

        run()
        times = []
        cpu = loadgen.self_cpu()
        started = time.perf_counter()
        count = max(10, rounds // size)
        for _ in range(count):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
        cpu_ms = (loadgen.self_cpu() - cpu) * 1000 / (count * size)
        results[size] = (statistics.median(times), percentile(times, 0.95), count * size / elapsed, cpu_ms)
    return results


async def raw_with_noise(
    cache: Path, jpeg: bytes, rounds: int
) -> dict[int, tuple[float, float, float, float]]:
    """:func:`bench_raw`, saying how much of the machine other processes used meanwhile."""
    busy, own, started = loadgen.machine_busy(), loadgen.self_cpu(), time.monotonic()
    raw = await asyncio.to_thread(bench_raw, cache, jpeg, rounds)
    others = (loadgen.machine_busy() - busy) - (loadgen.self_cpu() - own)
    share = max(others, 0.0) / ((time.monotonic() - started) * (os.cpu_count() or 1))
    print(f"    others' CPU during the raw pipeline: {pct(share)}", flush=True)
    return raw


async def run_job_cells(
    target: Target,
    options: Options,
    model: str,
    *,
    fields: dict[str, str],
    files: dict[str, tuple[str, bytes, str]],
    cells: list[tuple[int, float]],
    config: str,
    batching: str,
    backlog: int = 0,
) -> tuple[list[Row], Backlog | None]:
    """One account per client; then, for each (clients, poll interval), a measured cell; then,
    with ``backlog``, a saturated queue of that many jobs (:func:`run_backlog`)."""
    started = time.monotonic()
    auths = await loadgen.make_users(target.url, max(n for n, _ in cells), CREDITS)
    body, content_type = loadgen.multipart({"model": model, **fields}, files)
    print(f"    {len(auths)} accounts ready in {time.monotonic() - started:.1f} s", flush=True)
    # Warm up: the model loads (when not preloaded), connections open, caches fill.
    conn = Connection(target.url)
    try:
        warm = loadgen.job_step(body, content_type, auths, options.poll_s)
        for _ in range(5):
            await warm(conn, 0)
    finally:
        await conn.close()
    rows = []
    for n, poll_s in cells:
        step = loadgen.job_step(body, content_type, auths, poll_s)
        meter = CpuMeter(target)
        cell = await loadgen.run_clients(
            target.url, n, step, warmup_s=options.warmup_s, window_s=options.window_s, on_window=meter
        )
        cell.cpu = meter.delta
        row = Row(config, batching, cell, poll_ms=poll_s * 1000)
        rows.append(row)
        print(
            f"    {config:<12} batching {batching:<3} {n:>3} clients, poll {poll_label(poll_s * 1000):>4}: "
            f"{cell.rate:7.1f} jobs/s  p50 {fmt(cell.p(0.5)):>7} ms  p99 {fmt(cell.p(0.99)):>7} ms  "
            f"errors {cell.errors}  others' CPU {fmt(others_share(cell) * 100, 0)}%",
            flush=True,
        )
    drained = None
    if backlog:
        drained = await run_backlog(target, auths, body, content_type, backlog, config, batching)
    return rows, drained


@dataclass
class Backlog:
    """A saturated queue: ``count`` jobs submitted without polling, then drained by the workers."""

    config: str
    batching: str
    count: int
    submitted_at: float  # time.time() when the last submit was answered
    submit_s: float  # all submits answered after this long
    drained: int  # jobs that finished after the last submit was answered
    drain_s: float  # last submit answered -> last job finished
    failed: int
    jobs: list[dict[str, Any]]
    workers: int
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def drain_rate(self) -> float:
        return self.drained / self.drain_s if self.drain_s > 0 else float("nan")


async def run_backlog(
    target: Target,
    auths: list[bytes],
    body: bytes,
    content_type: bytes,
    count: int,
    config: str,
    batching: str,
) -> Backlog:
    """Submit ``count`` jobs from 8 connections (no polling), then measure how fast the workers
    empty the queue once the API is idle: the service at saturation, without clients' polls."""
    users = auths[:8]
    ids: list[set[str]] = [set() for _ in users]

    async def submitter(i: int) -> None:
        conn = Connection(target.url)
        try:
            for _ in range(i, count, len(users)):
                status, data = await conn.request("POST", "/api/jobs", users[i] + content_type, body)
                if status != 201:
                    raise loadgen.HTTPError(f"submit: {status} {data[:200]!r}")
                ids[i].add(json.loads(data)["id"])
        finally:
            await conn.close()

    started = time.time()
    await asyncio.gather(*(submitter(i) for i in range(len(users))))
    submitted = time.time()
    meter = CpuMeter(target)
    await meter(True)
    jobs: dict[str, dict[str, Any]] = {}
    conn = Connection(target.url)
    try:
        deadline = time.monotonic() + 300
        while len(jobs) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            for i, auth in enumerate(users):
                if all(job_id in jobs for job_id in ids[i]):
                    continue
                _, data = await conn.request("GET", "/api/jobs?limit=200", auth, retry=True)
                for item in json.loads(data)["items"]:
                    if item["id"] in ids[i] and item["status"] in ("succeeded", "failed", "canceled"):
                        jobs[item["id"]] = item
    finally:
        await conn.close()
    await meter(False)
    finished = [stamp(job["finished_at"]) for job in jobs.values()]
    last = max(finished) if finished else float("nan")
    backlog = Backlog(
        config,
        batching,
        count,
        submitted,
        submitted - started,
        sum(1 for f in finished if f > submitted),
        last - submitted,
        sum(1 for job in jobs.values() if job["status"] != "succeeded") + count - len(jobs),
        list(jobs.values()),
        target.workers,
        meter.delta,
    )
    print(
        f"    {config:<12} batching {batching:<3} backlog of {count}: submitted in {backlog.submit_s:.1f} s, "
        f"{backlog.drained} drained at {backlog.drain_rate:.1f} jobs/s, {backlog.failed} failed",
        flush=True,
    )
    return backlog


def job_cells(options: Options, clients: list[int]) -> list[tuple[int, float]]:
    """Each client count at the poll interval; then, with long polling (poll interval 0), one
    client and the most; then the most again with relaxed polling."""
    cells = [(n, options.poll_s) for n in clients]
    if options.long_poll:
        cells += [(n, 0.0) for n in sorted({min(clients), max(clients)})]
    if options.relaxed_poll_s > 0:
        cells.append((max(clients), options.relaxed_poll_s))
    return cells


def poll_label(poll_ms: float) -> str:
    return "long" if poll_ms == 0 else fmt(poll_ms, 0)


def others_share(cell: Cell) -> float:
    """The share of the machine's CPU (all cores) that processes outside this benchmark used."""
    cpu = cell.cpu
    if "machine" not in cpu:
        return float("nan")
    ours = sum(v for k, v in cpu.items() if k != "machine")
    cores = os.cpu_count() or 1
    return max(cpu["machine"] - ours, 0.0) / (cell.window_s * cores)


async def bench_inprocess(
    cache: Path, jpeg: bytes, options: Options, batching: bool
) -> tuple[list[Row], Backlog | None]:
    """(a) `mlservice serve` on SQLite with its in-process worker: the embedded default."""
    with tempfile.TemporaryDirectory(prefix="mlservice-scale-") as tmp:
        var = Path(tmp)
        env = mlservice_env(
            MLSERVICE_VAR_DIR=str(var),
            MLSERVICE_MODEL_CACHE_DIR=str(cache),
            MLSERVICE_BATCHING=str(batching).lower(),
            MLSERVICE_LOG_LEVEL="info",
        )
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "mlservice", "migrate"],
            env=env,
            cwd=var,
            check=True,
            capture_output=True,
        )
        port = free_port()
        child = spawn(
            "serve",
            [sys.executable, "-m", "mlservice", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env,
            var,
            var / "logs",
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_http(url, child)

            async def groups() -> dict[str, list[int]]:
                return {"serve": [child.popen.pid]}

            target = Target(url, groups)
            return await run_job_cells(
                target,
                options,
                MODEL,
                fields={},
                files={"file": ("cat.jpg", jpeg, "image/jpeg")},
                cells=job_cells(options, options.clients),
                backlog=options.backlog,
                config="a in-process",
                batching="on" if batching else "off",
            )
        except Exception:
            print(f"    server log (last lines):\n{child.tail()}", flush=True)
            raise
        finally:
            child.stop()


@contextlib.asynccontextmanager
async def deployment(
    cache: Path,
    apis: int,
    workers: int,
    models: list[str],
    batching: bool,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[tuple[LocalDeployment, Target]]:
    async with pg_database("mlservice_scale") as database:
        with (
            amqp_vhost("mlservice_scale") as vhost,
            tempfile.TemporaryDirectory(prefix="mlservice-scale-") as tmp,
        ):
            local = LocalDeployment(
                f"postgresql+asyncpg://{PG}/{database}",
                f"amqp://{AMQP}/{vhost}",
                Path(tmp) / "var",
                api_count=apis,
                worker_count=workers,
                models=models,
                extra_env={
                    "MLSERVICE_BATCHING": str(batching).lower(),
                    "MLSERVICE_PRELOAD_MODELS": "true",
                    # A load generator is many requests from one address by design.
                    "MLSERVICE_RATE_LIMITS_ENABLED": "false",
                    "MLSERVICE_MAX_UNFINISHED_JOBS_PER_USER": "0",
                    "MLSERVICE_MAX_QUEUED_JOBS_PER_MODEL": "0",
                    **(extra_env or {}),
                },
                model_cache_dir=cache,
            )
            await asyncio.to_thread(local.start)
            try:

                async def groups() -> dict[str, list[int]]:
                    found = {
                        "api": [p.pid for p in local.api_procs],
                        "worker": [p.pid for p in local.worker_procs if p is not None],
                        "nginx": [local.nginx_proc.pid] if local.nginx_proc is not None else [],
                        "postgres": await pg_backend_pids(database),
                    }
                    return found

                yield local, Target(local.url, groups, {"rabbitmq": "beam.smp"}, workers)
            finally:
                await asyncio.to_thread(local.stop)


async def bench_deployment(
    cache: Path, jpeg: bytes, options: Options, name: str, apis: int, workers: int, batching: bool
) -> tuple[list[Row], Backlog | None]:
    async with deployment(cache, apis, workers, [MODEL], batching) as (_, target):
        return await run_job_cells(
            target,
            options,
            MODEL,
            fields={},
            files={"file": ("cat.jpg", jpeg, "image/jpeg")},
            cells=job_cells(options, options.clients),
            backlog=options.backlog,
            config=name,
            batching="on" if batching else "off",
        )


async def bench_noop(cache: Path, options: Options, batching: bool) -> tuple[list[Row], Backlog | None]:
    """The no-op predictor through nginx -> 1 API -> RabbitMQ -> 1 worker, on PostgreSQL."""
    with tempfile.TemporaryDirectory(prefix="mlservice-noop-plugin-") as plugin:
        install_plugin(Path(plugin))
        pythonpath = os.pathsep.join([plugin, str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        async with deployment(cache, 1, 1, [NoOp.slug], batching, {"PYTHONPATH": pythonpath}) as (_, target):
            return await run_job_cells(
                target,
                options,
                NoOp.slug,
                fields={"text": "ping"},
                files={},
                cells=job_cells(options, options.noop_clients),
                backlog=options.backlog * 2,
                config="noop b",
                batching="on" if batching else "off",
            )


async def bench_naive(cache: Path, jpeg: bytes, options: Options) -> list[Row]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mlservice-naive-") as tmp:
        env = mlservice_env(NAIVE_MODEL_CACHE=str(cache), PYTHONPATH=str(ROOT))
        child = spawn(
            "naive",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.naive_server:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env,
            ROOT,
            Path(tmp),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            await wait_http(url, child, "/health")
            body, content_type = loadgen.multipart({}, {"file": ("cat.jpg", jpeg, "image/jpeg")})

            async def step(conn: Connection, i: int) -> Sample:
                submitted = time.time()
                status, data = await conn.request("POST", "/classify", content_type, body)
                done = time.time()
                if status != 200:
                    raise loadgen.HTTPError(f"classify: {status} {data[:200]!r}")
                return Sample(submitted, done, done)

            async def groups() -> dict[str, list[int]]:
                return {"naive server": [child.popen.pid]}

            target = Target(url, groups)
            conn = Connection(url)
            for _ in range(5):
                await step(conn, 0)
            await conn.close()
            rows = []
            for n in options.clients:
                meter = CpuMeter(target)
                cell = await loadgen.run_clients(
                    url, n, step, warmup_s=options.warmup_s, window_s=options.window_s, on_window=meter
                )
                cell.cpu = meter.delta
                rows.append(Row("naive", "-", cell))
                print(
                    f"    naive server {n:>3} clients: {cell.rate:7.1f} req/s  p50 {fmt(cell.p(0.5)):>7} ms  "
                    f"p99 {fmt(cell.p(0.99)):>7} ms  others' CPU {fmt(others_share(cell) * 100, 0)}%",
                    flush=True,
                )
            return rows
        finally:
            child.stop()


@dataclass
class CeleryResult:
    variant: str
    p50_ms: float
    p99_ms: float
    rate_1: float
    rate_n: float
    p50_n_ms: float
    p99_n_ms: float
    clients: int
    others: float


def bench_celery(options: Options, durable: bool) -> CeleryResult:
    """A no-op Celery task over the same RabbitMQ (rpc:// results) and a --pool=solo worker
    subprocess; each client is a process of its own (see bench.celery_noop.client)."""
    from bench import celery_noop

    variant = "durable" if durable else "default"
    clients = max(options.noop_clients)
    with amqp_vhost("mlservice_scale_celery") as vhost, tempfile.TemporaryDirectory() as tmp:
        broker = f"amqp://{AMQP}/{vhost}"
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            BENCH_CELERY_BROKER=broker,
            BENCH_CELERY_DURABLE="1" if durable else "0",
        )
        worker = spawn(
            "celery",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.celery_noop",
                "worker",
                "--pool=solo",
                # The default (4 x 2 "concurrency" = 8 prefetched tasks) stalls a solo worker for
                # ~10 s each time 32 clients exhaust it; prefetch >= clients avoids that.
                "--prefetch-multiplier=32",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
                "-Q",
                celery_noop.QUEUE,
            ],
            env,
            ROOT,
            Path(tmp),
        )
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bench.celery_noop"])
        try:
            with ProcessPoolExecutor(max_workers=clients, mp_context=context) as pool:
                # Start every client process and its connection; the first round trip of a client
                # also waits for the worker to consume.
                now = time.time()
                for future in [
                    pool.submit(celery_noop.client, broker, durable, now, now) for _ in range(clients)
                ]:
                    future.result(timeout=180)
                measured: dict[int, tuple[list[float], int, float, float]] = {}
                for n in (1, clients):
                    start = time.time() + 1.0 + 0.05 * n  # every client has done its first round trip
                    window_start = start + options.warmup_s
                    window_end = window_start + options.window_s
                    futures = [
                        pool.submit(celery_noop.client, broker, durable, start, window_end) for _ in range(n)
                    ]
                    time.sleep(max(window_start - time.time(), 0.0))
                    before, busy0 = loadgen.proc_stats(), loadgen.machine_busy()
                    time.sleep(max(window_end - time.time(), 0.0))
                    after, busy = loadgen.proc_stats(), loadgen.machine_busy() - busy0
                    ours = sum(
                        loadgen.group_cpu(
                            before, after, {"bench": [os.getpid()]}, {"rabbitmq": "beam.smp"}
                        ).values()
                    )
                    elapsed = window_end - window_start
                    others = max(busy - ours, 0.0) / (elapsed * (os.cpu_count() or 1))
                    trips = [trip for future in futures for trip in future.result(timeout=120)]
                    latencies = [(done - sent) * 1000 for sent, _, done in trips if sent >= window_start]
                    count = sum(1 for _, _, done in trips if window_start <= done < window_end)
                    slow = [
                        (round(ran - sent, 3), round(done - ran, 3))
                        for sent, ran, done in trips
                        if done - sent > 1
                    ]
                    if slow:
                        print(f"    celery round trips over 1 s (sent->ran, ran->received, s): {slow[:10]}")
                    measured[n] = (latencies, count, elapsed, others)
                    print(
                        f"    celery {variant:<8} {n:>3} clients: {count / elapsed:7.1f} tasks/s  "
                        f"p50 {fmt(median(latencies)):>6} ms  p99 {fmt(percentile(latencies, 0.99)):>6} ms  "
                        f"others' CPU {pct(others)}",
                        flush=True,
                    )
        finally:
            worker.stop()
    lat1, count1, elapsed1, _ = measured[1]
    latn, countn, elapsedn, others = measured[clients]
    return CeleryResult(
        variant,
        median(lat1),
        percentile(lat1, 0.99),
        count1 / elapsed1,
        countn / elapsedn,
        median(latn),
        percentile(latn, 0.99),
        clients,
        others,
    )


# -- report -----------------------------------------------------------------------------------------


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: str = "") -> None:
    """Print a plain-text table: first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    if notes:
        print(notes)
    for r in cells:
        print(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )


def pct(value: float) -> str:
    return fmt(value * 100, 0) + "%"


def raw_rate(raw: dict[int, tuple[float, float, float, float]], size: int | None = None) -> float:
    """Images/s of the raw pipeline from its p50 at ``size`` (None: the best batch size)."""
    if not raw:
        return float("nan")
    if size is None:
        return max(size * 1000 / p50 for size, (p50, _, _, _) in raw.items())
    return size * 1000 / raw[size][0] if size in raw else float("nan")


def print_raw(raw: dict[int, tuple[float, float, float, float]]) -> None:
    table(
        "Raw pipeline: the classifier's decode + preprocess + its onnxruntime session, by hand, in a loop",
        ["batch", "p50 ms/batch", "p95 ms/batch", "images/s at p50", "images/s (mean)", "CPU ms/image"],
        [
            [size, fmt(p50), fmt(p95), fmt(size * 1000 / p50), fmt(mean_rate), fmt(cpu_ms)]
            for size, (p50, p95, mean_rate, cpu_ms) in raw.items()
        ],
        "images/s at p50 (robust to other people's CPU bursts) is what the ratios below divide by.",
    )


def print_naive(naive: list[Row]) -> None:
    table(
        "Naive FastAPI server (bench/naive_server.py: onnxruntime inline in a sync handler, uvicorn)",
        ["clients", "req/s", "p50 ms", "p99 ms", "others' CPU"],
        [
            [
                r.cell.clients,
                fmt(r.cell.rate),
                fmt(r.cell.p(0.5)),
                fmt(r.cell.p(0.99)),
                pct(others_share(r.cell)),
            ]
            for r in naive
        ],
    )


def print_service(rows: list[Row], raw: dict[int, tuple[float, float, float, float]]) -> None:
    out = []
    for row in rows:
        cell = row.cell
        submits = [(s.accepted - s.submitted) * 1000 for s in cell.samples]
        out.append(
            [
                row.config,
                row.batching,
                cell.clients,
                poll_label(row.poll_ms),
                fmt(cell.rate),
                fmt(cell.p(0.5)),
                fmt(cell.p(0.99)),
                fmt(median(submits)),
                fmt(median(done_latencies(row))),
                fmt(median(s.polls for s in cell.samples), 0),
                fmt(mean_batch(row.jobs), 2),
                fmt(cell.rate / raw_rate(raw, 1), 2),
                fmt(cell.rate / raw_rate(raw), 2),
                cell.errors,
                pct(others_share(cell)),
            ]
        )
    table(
        "Image classification jobs end to end (submit -> the poll that sees the job terminal)",
        [
            "config",
            "batching",
            "clients",
            "poll ms",
            "jobs/s",
            "p50 ms",
            "p99 ms",
            "submit p50",
            "done p50",
            "polls/job",
            "jobs/batch",
            "÷raw b1",
            "÷raw best",
            "errors",
            "others' CPU",
        ],
        out,
        "done p50: submit -> the job's finished_at stamp (no poll delay). jobs/batch: jobs per claimed"
        " batch (one started_at per batch). ÷raw: jobs/s over the raw pipeline's images/s (batch 1, best)."
        " others' CPU: share of the machine used by processes outside this benchmark in the window.",
    )


def print_breakdown(rows: list[Row]) -> None:
    groups = ["serve", "naive server", "api", "worker", "nginx", "postgres", "rabbitmq", "bench client"]
    out = []
    for row in rows:
        cell = row.cell
        if cell.completed == 0:
            continue
        phases = breakdown(row) if row.jobs else {}
        cpu = cell.cpu
        ours = sum(v for k, v in cpu.items() if k != "machine")
        others = max(cpu.get("machine", 0.0) - ours, 0.0)
        out.append(
            [
                row.config,
                row.batching,
                cell.clients,
                poll_label(row.poll_ms),
                *(
                    fmt(phases.get(k, float("nan")))
                    for k in ("submit req", "queued", "running", "model", "to seen")
                ),
                *(fmt(cpu[g] * 1000 / cell.completed) if g in cpu else "-" for g in groups),
                fmt(others * 1000 / cell.completed),
            ]
        )
    table(
        "Where a job's time goes (medians, ms) and who spent CPU on it (ms of CPU per completed job)",
        [
            "config",
            "batching",
            "clients",
            "poll ms",
            "submit",
            "queued",
            "running",
            "model",
            "to seen",
            *(f"cpu:{g.split()[0]}" for g in groups),
            "cpu:others",
        ],
        out,
        "submit: POST /api/jobs round trip. queued: job row created -> claimed by a worker (commit, publish,"
        " delivery, batching wait, jobs ahead). running: claimed -> outcome written (input read, model)."
        " model: the batch's predict_batch. to seen: outcome written -> the client's poll saw it (commit,"
        " poll interval, poll request). cpu:bench = the load generator itself.",
    )


def print_ratios(
    rows: list[Row], naive: list[Row], raw: dict[int, tuple[float, float, float, float]]
) -> None:
    by_clients = {row.cell.clients: row.cell for row in naive}
    out = []
    for row in rows:
        cell = row.cell
        if cell.clients < 8:
            continue
        naive_cell = by_clients.get(cell.clients)
        naive_rate = naive_cell.rate if naive_cell else float("nan")
        naive_p99 = naive_cell.p(0.99) if naive_cell else float("nan")
        out.append(
            [
                row.config,
                row.batching,
                cell.clients,
                poll_label(row.poll_ms),
                fmt(cell.rate),
                fmt(cell.rate / raw_rate(raw), 2),
                fmt(naive_rate),
                fmt(cell.rate / naive_rate, 2),
                fmt(cell.p(0.99)),
                fmt(naive_p99),
                fmt(cell.p(0.99) / naive_p99, 2),
            ]
        )
    table(
        f"Ratios at 8+ clients: raw pipeline best {fmt(raw_rate(raw))} images/s; target jobs/s ÷ raw >= 0.8",
        [
            "config",
            "batching",
            "clients",
            "poll ms",
            "jobs/s",
            "÷raw best",
            "naive req/s",
            "÷naive",
            "p99 ms",
            "naive p99",
            "p99 ÷ naive",
        ],
        out,
    )


def print_backlogs(backlogs: list[Backlog], raw: dict[int, tuple[float, float, float, float]]) -> None:
    groups = ["serve", "api", "worker", "nginx", "postgres", "rabbitmq"]
    out = []
    for b in backlogs:
        drained = [j for j in b.jobs if j.get("finished_at") and stamp(j["finished_at"]) > b.submitted_at]
        batches = {j["started_at"]: float(j.get("processing_ms") or 0.0) for j in drained}
        # The workers kept up with the submits: nothing was left to drain, no saturated rate to show.
        valid = b.drained >= b.count // 4
        noop = b.config.startswith("noop")
        rate = b.drain_rate if valid else float("nan")
        cpu = {g: b.cpu[g] * 1000 / b.drained for g in groups if g in b.cpu and valid}
        out.append(
            [
                b.config,
                b.batching,
                b.count,
                fmt(b.count / b.submit_s),
                b.drained,
                fmt(rate),
                "-" if noop else fmt(rate / raw_rate(raw, 1), 2),
                "-" if noop else fmt(rate / raw_rate(raw), 2),
                fmt(mean_batch(drained), 2),
                fmt(median(batches.values())) if valid else "-",
                fmt(b.drain_s * 1000 * b.workers / len(batches)) if valid and batches else "-",
                pct(sum(batches.values()) / (b.drain_s * 1000 * b.workers)) if valid and batches else "-",
                b.failed,
                *(fmt(cpu[g]) if g in cpu else "-" for g in groups),
            ]
        )
    table(
        "Saturated queue: a backlog submitted without polling, then drained by the workers (no client load)",
        [
            "config",
            "batching",
            "jobs",
            "submitted/s",
            "drained",
            "drain jobs/s",
            "÷raw b1",
            "÷raw best",
            "jobs/batch",
            "model ms/batch",
            "ms/batch",
            "model busy",
            "failed",
            *(f"cpu:{g}" for g in groups),
        ],
        out,
        "submitted/s: the backlog's submits from 8 connections (the API's ceiling, workers busy meanwhile)."
        " drain jobs/s: jobs finished after the last submit was answered / time until the last finished"
        " (the workers' rate with a full queue and an idle API; '-' when the workers kept up with the"
        " submits). model ms/batch: predict_batch (p50); ms/batch: a worker's wall time per batch;"
        " model busy: the share of the workers' time spent in predict_batch. cpu: ms per drained job.",
    )


def print_noop(rows: list[Row], celery: list[CeleryResult]) -> None:
    out: list[list[object]] = []
    for row in rows:
        cell = row.cell
        submits = [(s.accepted - s.submitted) * 1000 for s in cell.samples]
        out.append(
            [
                f"mlservice no-op, batching {row.batching}",
                cell.clients,
                poll_label(row.poll_ms),
                fmt(cell.rate),
                fmt(cell.p(0.5)),
                fmt(cell.p(0.99)),
                fmt(median(done_latencies(row))),
                fmt(median(submits)),
                pct(others_share(cell)),
            ]
        )
    for result in celery:
        name = f"celery no-op, {result.variant}"
        out.append([name, 1, "-", fmt(result.rate_1), fmt(result.p50_ms), fmt(result.p99_ms), "-", "-", "-"])
        out.append(
            [
                name,
                result.clients,
                "-",
                fmt(result.rate_n),
                fmt(result.p50_n_ms),
                fmt(result.p99_n_ms),
                "-",
                "-",
                pct(result.others),
            ]
        )
    table(
        "No-op jobs: the job machinery alone (PostgreSQL + RabbitMQ, nginx -> 1 API -> 1 worker) vs Celery",
        [
            "system",
            "clients",
            "poll ms",
            "jobs/s",
            "p50 ms",
            "p99 ms",
            "done p50",
            "submit p50",
            "others' CPU",
        ],
        out,
        "targets: no-op done/seen p50 <= 15 ms at 1 client. Celery: .delay().get() round trips, 1 or N"
        " in flight, rpc:// results, a --pool=solo worker. celery default: durable classic queue,"
        " persistent messages, no publisher confirms, ack before the task runs; celery durable: quorum"
        " queue, publisher confirms, ack after the task (mlservice's message guarantees, without its"
        " database writes).",
    )


# -- main -------------------------------------------------------------------------------------------


def parse_args() -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    parser.add_argument("--configs", default="raw,naive,a,b,c,noop,celery")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--batching", default="on,off")
    parser.add_argument("--window", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds per cell before measuring")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="clients poll their job this often")
    parser.add_argument(
        "--backlog",
        type=int,
        default=400,
        help="jobs submitted at once, then drained, per configuration (twice that for no-op; 0: none)",
    )
    parser.add_argument(
        "--long-poll",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cells at 1 and the most clients that long-poll (GET /api/jobs/{id}?wait=...)",
    )
    parser.add_argument(
        "--relaxed-poll-ms",
        type=float,
        default=0.0,
        help="one more cell at the most clients, polling this often (0: none)",
    )
    args = parser.parse_args()
    options = Options(
        clients=[int(c) for c in args.clients.split(",")],
        warmup_s=args.warmup,
        window_s=args.window,
        poll_s=args.poll_ms / 1000,
        configs=args.configs.split(","),
        batching=[b == "on" for b in args.batching.split(",")],
        raw_rounds=200,
        noop_clients=[1, 32],
        relaxed_poll_s=args.relaxed_poll_ms / 1000,
        celery_durable=[False, True],
        backlog=args.backlog,
        long_poll=args.long_poll,
    )
    if args.quick:
        options.clients = [1, 8]
        options.noop_clients = [1, 8]
        options.warmup_s, options.window_s = 0.5, 2.0
        options.batching = [True]
        options.raw_rounds = 40
        options.relaxed_poll_s = 0.0
        options.backlog = min(options.backlog, 100)
        options.celery_durable = [False]
    return options, args


SKIPPED: list[str] = []


async def with_none(rows: Awaitable[list[Row]]) -> tuple[list[Row], Backlog | None]:
    return await rows, None


async def attempt(
    name: str, run: Callable[[], Awaitable[tuple[list[Row], Backlog | None]]], tries: int = 3
) -> tuple[list[Row], Backlog | None]:
    """Run one configuration; when it cannot start (other people's tests restart the shared
    RabbitMQ at times), wait and start it afresh, and in the end skip it rather than the run."""
    for n in range(1, tries + 1):
        try:
            return await run()
        except Exception as exc:
            summary = " ".join(str(exc).split())[:300]
            print(f"    {name}: attempt {n} failed: {type(exc).__name__}: {summary}", flush=True)
            if n < tries:
                await asyncio.sleep(20)
    SKIPPED.append(name)
    return [], None


def add(result: tuple[list[Row], Backlog | None], rows: list[Row], backlogs: list[Backlog]) -> None:
    rows.extend(result[0])
    if result[1] is not None:
        backlogs.append(result[1])


async def amain(options: Options, cache: Path, jpeg: bytes) -> None:
    started = time.monotonic()
    raw: dict[int, tuple[float, float, float, float]] = {}
    naive: list[Row] = []
    rows: list[Row] = []
    noop: list[Row] = []
    backlogs: list[Backlog] = []
    noop_backlogs: list[Backlog] = []
    celery: list[CeleryResult] = []
    print(
        f"# bench/scale.py: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start, "
        f"image {len(jpeg)} bytes (451x300 JPEG), poll every {options.poll_s * 1000:.0f} ms, "
        f"{options.warmup_s:.0f} s warm-up + {options.window_s:.0f} s measured per cell, model cache {cache}",
        flush=True,
    )
    if "raw" in options.configs:
        print("\n- raw pipeline", flush=True)
        raw = await raw_with_noise(cache, jpeg, options.raw_rounds)
        print_raw(raw)
    if "naive" in options.configs:
        print("\n- naive server", flush=True)
        naive = (await attempt("naive", lambda: with_none(bench_naive(cache, jpeg, options))))[0]
    for batching in options.batching:
        if "a" in options.configs:
            print(f"\n- a: mlservice serve (SQLite, in-process worker), batching {batching}", flush=True)
            add(
                await attempt(
                    f"a batching {batching}",
                    partial(bench_inprocess, cache, jpeg, options, batching),
                ),
                rows,
                backlogs,
            )
        if "b" in options.configs:
            print(f"\n- b: nginx -> 1 API, RabbitMQ -> 1 worker, PostgreSQL, batching {batching}", flush=True)
            add(
                await attempt(
                    f"b batching {batching}",
                    partial(bench_deployment, cache, jpeg, options, "b 1api+1wk", 1, 1, batching),
                ),
                rows,
                backlogs,
            )
        if "c" in options.configs:
            print(
                f"\n- c: nginx -> 2 APIs, RabbitMQ -> 2 workers, PostgreSQL, batching {batching}", flush=True
            )
            add(
                await attempt(
                    f"c batching {batching}",
                    partial(bench_deployment, cache, jpeg, options, "c 2api+2wk", 2, 2, batching),
                ),
                rows,
                backlogs,
            )
        if "c1" in options.configs:
            print(
                f"\n- c1: nginx -> 1 API, RabbitMQ -> 2 workers, PostgreSQL, batching {batching}", flush=True
            )
            add(
                await attempt(
                    f"c1 batching {batching}",
                    partial(bench_deployment, cache, jpeg, options, "c1 1api+2wk", 1, 2, batching),
                ),
                rows,
                backlogs,
            )
    if "noop" in options.configs:
        for batching in options.batching:
            print(f"\n- no-op predictor, batching {batching}", flush=True)
            add(
                await attempt(
                    f"noop batching {batching}",
                    partial(bench_noop, cache, options, batching),
                ),
                noop,
                noop_backlogs,
            )
    if "celery" in options.configs:
        for durable in options.celery_durable:
            print(f"\n- celery no-op ({'durable' if durable else 'default'})", flush=True)
            for n in range(1, 4):
                try:
                    celery.append(await asyncio.to_thread(bench_celery, options, durable))
                    break
                except Exception as exc:
                    print(
                        f"    celery: attempt {n} failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True
                    )
                    await asyncio.sleep(20)
            else:
                SKIPPED.append(f"celery {'durable' if durable else 'default'}")

    if "raw" in options.configs:
        # Measured again at the end; each batch size keeps its faster run (the less disturbed one).
        print("\n- raw pipeline, again", flush=True)
        again = await raw_with_noise(cache, jpeg, options.raw_rounds)
        print_raw(again)
        raw = {size: min(raw[size], again[size]) for size in raw}
    print(f"\n\n# Results ({time.monotonic() - started:.0f} s, load average now {os.getloadavg()[0]:.2f})")
    if raw:
        print_raw(raw)
    if naive:
        print_naive(naive)
    if rows:
        print_service(rows, raw)
    if rows or noop or naive:
        print_breakdown(rows + noop + naive)
    if rows and (raw or naive):
        print_ratios(rows, naive, raw)
    if backlogs or noop_backlogs:
        print_backlogs(backlogs + noop_backlogs, raw)
    if noop or celery:
        print_noop(noop, celery)
    if SKIPPED:
        print(f"\nskipped (could not run, see the log above): {', '.join(SKIPPED)}")


def interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    options, _ = parse_args()
    # Stopped with SIGTERM, or SIGINT when started in the background (which ignores it): still clean
    # up (the runner cancels the main task, so deployments stop, databases and vhosts are dropped).
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cache = model_cache()
    if shutil.which("rabbitmqctl") is None and any(
        c in options.configs for c in ("b", "c", "noop", "celery")
    ):
        raise SystemExit("rabbitmqctl is needed to create the benchmark's RabbitMQ vhosts")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(amain(options, cache, chelsea_jpeg()))


if __name__ == "__main__":
    main()
