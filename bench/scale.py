"""Benchmark: scaling out the image classifier, against a raw loop, a naive server and Celery.

    .venv/bin/python bench/scale.py [--quick] [--configs a,b,c,naive,noop,celery] [--clients 1,8,32]

Each client submits a JPEG job (POST /api/jobs), polls GET /api/jobs/{id} every --poll-ms until the
job is terminal, then submits the next one; N clients, one account each, run for a warm-up and then
a measured window. jobs/s counts jobs seen terminal inside the window; latencies (submit -> the
poll that saw the job terminal) are those of jobs submitted inside it.

Configurations, each with dynamic batching on and off (MLSERVICE_BATCHING):
  a  the embedded default: one `mlservice serve` process, SQLite, in-process worker
  b  PostgreSQL + RabbitMQ: nginx -> 1 API process, 1 `mlservice worker` (LocalDeployment)
  c  PostgreSQL + RabbitMQ: nginx -> 2 API processes, 2 workers (LocalDeployment)
Baselines: the raw pipeline (the classifier's decode + preprocess + its onnxruntime session, by
hand, in a plain loop), a naive FastAPI server (bench/naive_server.py) under the same clients, a
no-op predictor through b's layout, and a Celery no-op task over the same RabbitMQ.

Everything (clients included) shares this machine's cores; the CPU table says who used them and
how much went to processes outside the benchmark (other people's work makes a cell noisy).
Needs PostgreSQL (MLSERVICE_BENCH_PG, default postgres@127.0.0.1:5432, trust), RabbitMQ
(MLSERVICE_BENCH_AMQP, default guest:guest@127.0.0.1:5672, `rabbitmqctl` for vhosts) and nginx
(installed by LocalDeployment when missing). Each configuration gets a database and a vhost of its
own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
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
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402
import uvloop  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skdata  # noqa: E402

from bench import loadgen  # noqa: E402
from bench.loadgen import Cell, Connection, Sample, median, percentile  # noqa: E402
from bench.noop import NoOp, install_plugin  # noqa: E402
from mlservice.deploy_local import LocalDeployment  # noqa: E402
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


def bench_raw(cache: Path, jpeg: bytes, rounds: int) -> dict[int, tuple[float, float, float]]:
    """batch size -> (p50, p95 ms per batch, mean images/s): the classifier's own steps by hand."""
    classifier = ImageClassifier(cache)
    classifier.load()
    session = classifier._session
    names = ([classifier._output_name], classifier._input_name)
    results: dict[int, tuple[float, float, float]] = {}
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
        started = time.perf_counter()
        count = max(10, rounds // size)
        for _ in range(count):
            t0 = time.perf_counter()
            run()
            times.append((time.perf_counter() - t0) * 1000)
        elapsed = time.perf_counter() - started
        results[size] = (statistics.median(times), percentile(times, 0.95), count * size / elapsed)
    return results


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
) -> list[Row]:
    """One account per client; then, for each (clients, poll interval), a measured cell."""
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
            f"    {config:<12} batching {batching:<3} {n:>3} clients, poll {poll_s * 1000:3.0f} ms: "
            f"{cell.rate:7.1f} jobs/s  p50 {fmt(cell.p(0.5)):>7} ms  p99 {fmt(cell.p(0.99)):>7} ms  "
            f"errors {cell.errors}  others' CPU {fmt(others_share(cell) * 100, 0)}%",
            flush=True,
        )
    return rows


def job_cells(options: Options, clients: list[int]) -> list[tuple[int, float]]:
    """Each client count at the poll interval, then the largest again with relaxed polling."""
    cells = [(n, options.poll_s) for n in clients]
    if options.relaxed_poll_s > 0:
        cells.append((max(clients), options.relaxed_poll_s))
    return cells


def others_share(cell: Cell) -> float:
    """The share of the machine's CPU (all cores) that processes outside this benchmark used."""
    cpu = cell.cpu
    if "machine" not in cpu:
        return float("nan")
    ours = sum(v for k, v in cpu.items() if k != "machine")
    cores = os.cpu_count() or 1
    return max(cpu["machine"] - ours, 0.0) / (cell.window_s * cores)


async def bench_inprocess(cache: Path, jpeg: bytes, options: Options, batching: bool) -> list[Row]:
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
                config="a in-process",
                batching="on" if batching else "off",
            )
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

                yield local, Target(local.url, groups, comm_groups={"rabbitmq": "beam.smp"})
            finally:
                await asyncio.to_thread(local.stop)


async def bench_deployment(
    cache: Path, jpeg: bytes, options: Options, name: str, apis: int, workers: int, batching: bool
) -> list[Row]:
    async with deployment(cache, apis, workers, [MODEL], batching) as (_, target):
        return await run_job_cells(
            target,
            options,
            MODEL,
            fields={},
            files={"file": ("cat.jpg", jpeg, "image/jpeg")},
            cells=job_cells(options, options.clients),
            config=name,
            batching="on" if batching else "off",
        )


async def bench_noop(cache: Path, options: Options, batching: bool) -> list[Row]:
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


def raw_rate(raw: dict[int, tuple[float, float, float]], size: int | None = None) -> float:
    """Images/s of the raw pipeline from its p50 at ``size`` (None: the best batch size)."""
    if not raw:
        return float("nan")
    if size is None:
        return max(size * 1000 / p50 for size, (p50, _, _) in raw.items())
    return size * 1000 / raw[size][0] if size in raw else float("nan")


def print_raw(raw: dict[int, tuple[float, float, float]]) -> None:
    table(
        "Raw pipeline: the classifier's decode + preprocess + its onnxruntime session, by hand, in a loop",
        ["batch", "p50 ms/batch", "p95 ms/batch", "images/s at p50", "images/s (mean)"],
        [
            [size, fmt(p50), fmt(p95), fmt(size * 1000 / p50), fmt(mean_rate)]
            for size, (p50, p95, mean_rate) in raw.items()
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


def print_service(rows: list[Row], raw: dict[int, tuple[float, float, float]]) -> None:
    out = []
    for row in rows:
        cell = row.cell
        submits = [(s.accepted - s.submitted) * 1000 for s in cell.samples]
        out.append(
            [
                row.config,
                row.batching,
                cell.clients,
                fmt(row.poll_ms, 0),
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
                fmt(row.poll_ms, 0),
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


def print_ratios(rows: list[Row], naive: list[Row], raw: dict[int, tuple[float, float, float]]) -> None:
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
                fmt(row.poll_ms, 0),
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


def print_noop(rows: list[Row], celery: list[CeleryResult]) -> None:
    out: list[list[object]] = []
    for row in rows:
        cell = row.cell
        submits = [(s.accepted - s.submitted) * 1000 for s in cell.samples]
        out.append(
            [
                f"mlservice no-op, batching {row.batching}",
                cell.clients,
                fmt(row.poll_ms, 0),
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
        "--relaxed-poll-ms",
        type=float,
        default=100.0,
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
    )
    if args.quick:
        options.clients = [1, 32]
        options.warmup_s, options.window_s = 0.5, 2.0
        options.batching = [True]
        options.raw_rounds = 40
        options.relaxed_poll_s = 0.0
        options.celery_durable = [False]
    return options, args


async def amain(options: Options, cache: Path, jpeg: bytes) -> None:
    started = time.monotonic()
    raw: dict[int, tuple[float, float, float]] = {}
    naive: list[Row] = []
    rows: list[Row] = []
    noop: list[Row] = []
    celery: list[CeleryResult] = []
    print(
        f"# bench/scale.py: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start, "
        f"image {len(jpeg)} bytes (451x300 JPEG), poll every {options.poll_s * 1000:.0f} ms, "
        f"{options.warmup_s:.0f} s warm-up + {options.window_s:.0f} s measured per cell, model cache {cache}",
        flush=True,
    )
    if "raw" in options.configs:
        print("\n- raw pipeline", flush=True)
        raw = await asyncio.to_thread(bench_raw, cache, jpeg, options.raw_rounds)
        print_raw(raw)
    if "naive" in options.configs:
        print("\n- naive server", flush=True)
        naive = await bench_naive(cache, jpeg, options)
    for batching in options.batching:
        if "a" in options.configs:
            print(f"\n- a: mlservice serve (SQLite, in-process worker), batching {batching}", flush=True)
            rows += await bench_inprocess(cache, jpeg, options, batching)
        if "b" in options.configs:
            print(f"\n- b: nginx -> 1 API, RabbitMQ -> 1 worker, PostgreSQL, batching {batching}", flush=True)
            rows += await bench_deployment(cache, jpeg, options, "b 1api+1wk", 1, 1, batching)
        if "c" in options.configs:
            print(
                f"\n- c: nginx -> 2 APIs, RabbitMQ -> 2 workers, PostgreSQL, batching {batching}", flush=True
            )
            rows += await bench_deployment(cache, jpeg, options, "c 2api+2wk", 2, 2, batching)
        if "c1" in options.configs:
            print(
                f"\n- c1: nginx -> 1 API, RabbitMQ -> 2 workers, PostgreSQL, batching {batching}", flush=True
            )
            rows += await bench_deployment(cache, jpeg, options, "c1 1api+2wk", 1, 2, batching)
    if "noop" in options.configs:
        for batching in options.batching:
            print(f"\n- no-op predictor, batching {batching}", flush=True)
            noop += await bench_noop(cache, options, batching)
    if "celery" in options.configs:
        for durable in options.celery_durable:
            print(f"\n- celery no-op ({'durable' if durable else 'default'})", flush=True)
            celery.append(await asyncio.to_thread(bench_celery, options, durable))

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
    if noop or celery:
        print_noop(noop, celery)


def main() -> None:
    options, _ = parse_args()
    cache = model_cache()
    if shutil.which("rabbitmqctl") is None and any(
        c in options.configs for c in ("b", "c", "noop", "celery")
    ):
        raise SystemExit("rabbitmqctl is needed to create the benchmark's RabbitMQ vhosts")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(amain(options, cache, chelsea_jpeg()))


if __name__ == "__main__":
    main()
