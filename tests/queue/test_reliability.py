"""What the RabbitMQ deployment promises when things go wrong, tested with real worker processes,
the real broker and PostgreSQL: poison jobs, workers killed mid-job, a broker restart, batching."""

from __future__ import annotations

import asyncio
import collections
import random
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import httpx
import pytest
from sqlalchemy import func, select

from mlservice.jobs.tables import Job, JobStatus
from mlservice.queue.rabbitmq import DEAD_LETTER_QUEUE
from mlservice.wallet.tables import LedgerEntry, Wallet
from tests.conftest import Service, rabbitmqctl, wait_for_job
from tests.fixtures.api import totals
from tests.fixtures.predictors import EchoText


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip(
            "API and worker processes share a PostgreSQL database; SQLite is the single-process default"
        )


Spawn = Callable[..., Any]


@pytest.fixture
async def spawn_worker(worker_env: dict[str, str]) -> AsyncIterator[Spawn]:
    """Start ``python -m tests.fixtures.worker`` processes; all are stopped at the end of the test."""
    procs: list[asyncio.subprocess.Process] = []

    async def spawn(*slugs: str, **env: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fixtures.worker",
            *slugs,
            env=worker_env | {f"MLSERVICE_{k.upper()}": v for k, v in env.items()},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=None,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def api(service_factory: Any, worker_env: dict[str, str], **overrides: Any) -> AsyncIterator[Service]:
    """The API in this process (no workers of its own), publishing to the test's vhost."""
    async with service_factory(
        [EchoText], broker_url=worker_env["MLSERVICE_BROKER_URL"], workers=0, **overrides
    ) as service:
        yield service


async def submit_echo(service: Service, headers: dict[str, str], text: str, sleep_ms: int = 0) -> str:
    r = await service.client.post(
        "/api/jobs",
        data={"model": "test-echo", "text": text, "params": f'{{"sleep_ms": {sleep_ms}}}'},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def topup(service: Service, headers: dict[str, str], amount: int) -> None:
    r = await service.client.post("/api/wallet/refill", json={"amount": amount}, headers=headers)
    assert r.status_code == 200, r.text


async def assert_books_balance(service: Service, job_ids: list[str]) -> collections.Counter[str]:
    """Every terminal job has exactly one capture or one release; each wallet's ledger adds up."""
    async with service.db.session() as session:
        jobs = {
            str(j.id): j
            for j in await session.scalars(select(Job).where(Job.id.in_(map(uuid.UUID, job_ids))))
        }
        entries = list(await session.scalars(select(LedgerEntry).where(LedgerEntry.job_id.in_(jobs))))
        totals = list(
            await session.execute(
                select(
                    LedgerEntry.user_id, func.sum(LedgerEntry.amount), func.sum(LedgerEntry.held_delta)
                ).group_by(LedgerEntry.user_id)
            )
        )
    settles = collections.Counter(
        (str(e.job_id), e.type) for e in entries if e.type in {"capture", "release"}
    )
    for job_id, job in jobs.items():
        assert JobStatus(job.status).finished, (job_id, job.status)
        expected = "capture" if job.status == JobStatus.succeeded else "release"
        assert settles[(job_id, expected)] == 1, (job_id, job.status, settles)
        assert settles[(job_id, "release" if expected == "capture" else "capture")] == 0
    async with service.db.session() as session:
        for user_id, amount, held in totals:
            wallet = await session.get(Wallet, user_id)
            assert wallet is not None
            assert (wallet.balance, wallet.held) == (amount, held) == (amount, 0)
    return collections.Counter(j.status for j in jobs.values())


async def test_poison_job_fails_after_the_attempt_limit_and_is_dead_lettered(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn
) -> None:
    async with api(service_factory, worker_env) as service:
        headers = await service.user()
        await spawn_worker("test-echo")
        poison = await submit_echo(service, headers, "boom")
        job = await wait_for_job(service.client, headers, poison, within=60)
        assert job["status"] == "failed"
        assert job["attempts"] == 3
        assert job["error"]["code"] == "prediction_failed"
        assert "exploded" in job["error"]["message"]
        assert "after 3 attempts" in job["error"]["message"]

        # The worker is not stuck on it, and the user paid nothing for the poison job.
        fine = await wait_for_job(service.client, headers, await submit_echo(service, headers, "fine"))
        assert fine["status"] == "succeeded"
        wallet = (await service.client.get("/api/wallet", headers=headers)).json()
        assert totals(wallet) == {"balance": 100 - EchoText.default_price, "held": 0, "available": 97}
        assert await assert_books_balance(service, [poison, fine["id"]]) == {"failed": 1, "succeeded": 1}

        # The message was parked in the dead-letter queue, once.
        connection = await aio_pika.connect(worker_env["MLSERVICE_BROKER_URL"])
        try:
            channel = await connection.channel()
            dead = await channel.declare_queue(DEAD_LETTER_QUEUE, durable=True, passive=True)
            message = await dead.get(timeout=5, fail=False)
            assert message is not None
            assert message.body.decode() == poison
            await message.ack()
            assert await dead.get(timeout=1, fail=False) is None
        finally:
            await connection.close()


@pytest.mark.parametrize("batching", [True, False])
async def test_a_burst_of_jobs_runs_in_batches(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn, batching: bool
) -> None:
    async with api(service_factory, worker_env) as service:
        headers = await service.user()
        # Queued before any worker exists, so the worker finds a backlog to batch.
        ids = [await submit_echo(service, headers, f"job {i}") for i in range(16)]
        await spawn_worker("test-echo", batching=str(batching).lower())
        jobs = [await wait_for_job(service.client, headers, job_id, within=60) for job_id in ids]
        assert [j["status"] for j in jobs] == ["succeeded"] * 16
        sizes = [j["output"]["batch_size"] for j in jobs]
        if batching:
            # EchoText takes up to 4 per run: a backlog of 16 fills (nearly) every batch.
            assert max(sizes) == EchoText.max_batch_size
            assert sizes.count(EchoText.max_batch_size) >= 12, sizes
        else:
            assert sizes == [1] * 16
        assert [j["output"]["echo"] for j in jobs] == [f"JOB {i}" for i in range(16)]
        await topup(service, headers, 1)  # the wallet is still writable and consistent
        assert await assert_books_balance(service, ids) == {"succeeded": 16}


async def test_workers_killed_mid_job_lose_nothing_and_capture_once(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn
) -> None:
    lease = {"job_lease_seconds": "3", "sweep_interval_seconds": "0.5"}
    async with api(service_factory, worker_env) as service:
        headers = await service.user()
        await topup(service, headers, 1000)
        ids = [await submit_echo(service, headers, f"slow {i}", sleep_ms=600) for i in range(24)]
        worker = await spawn_worker("test-echo", **lease)
        rng = random.Random(7)
        kills = 0
        while kills < 10:
            # Wait until a job is mid-prediction, then kill the worker without warning.
            for _ in range(400):
                async with service.db.session() as session:
                    running = await session.scalar(
                        select(func.count()).select_from(Job).where(Job.status == JobStatus.running)
                    )
                if running:
                    break
                await asyncio.sleep(0.025)
            else:
                pytest.fail("no job started running")
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            worker.send_signal(signal.SIGKILL)
            await worker.wait()
            kills += 1
            worker = await spawn_worker("test-echo", **lease)

        jobs = [await wait_for_job(service.client, headers, job_id, within=120) for job_id in ids]
        statuses = collections.Counter(j["status"] for j in jobs)
        assert set(statuses) <= {"succeeded", "failed"}, statuses
        for job in jobs:
            if job["status"] == "failed":  # killed on every one of its attempts
                assert job["error"]["code"] == "attempts_exhausted"
                assert job["attempts"] == 3
            else:
                assert job["output"]["echo"].startswith("SLOW")
        assert statuses["succeeded"] >= 18, statuses
        assert await assert_books_balance(service, ids) == statuses


# The worker process needs about 1-2 s to start: the broker stops while it starts, or once it runs.
@pytest.mark.parametrize("stop_after_s", [0.5, 2.5])
async def test_broker_restart_while_jobs_are_submitted_loses_no_job(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn, stop_after_s: float
) -> None:
    fast_relay = {"sweep_interval_seconds": "0.5", "relay_after_seconds": "1"}
    async with api(service_factory, worker_env) as service:
        headers = await service.user()
        await topup(service, headers, 1000)
        await spawn_worker("test-echo", **fast_relay)
        ids: list[str] = []

        async def keep_submitting() -> None:
            for i in range(60):
                ids.append(await submit_echo(service, headers, f"during restart {i}"))
                await asyncio.sleep(0.05)

        submitting = asyncio.create_task(keep_submitting())
        await asyncio.sleep(stop_after_s)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        try:
            await asyncio.sleep(2)
        finally:
            await asyncio.to_thread(rabbitmqctl, "start_app")
            await asyncio.to_thread(rabbitmqctl, "await_startup")
        await submitting
        assert len(ids) == 60

        jobs = [await wait_for_job(service.client, headers, job_id, within=120) for job_id in ids]
        assert collections.Counter(j["status"] for j in jobs) == {"succeeded": 60}
        assert await assert_books_balance(service, ids) == {"succeeded": 60}


async def test_worker_reports_health_and_readiness(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn
) -> None:
    port = free_port()
    async with api(service_factory, worker_env) as service:
        ready = await service.client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}

        await spawn_worker("test-echo", worker_health_port=str(port), preload_models="true")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    r = await client.get("/ready")
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
                    continue
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status_code == 200
            assert r.json() == {
                "status": "ok",
                "checks": {"database": "ok", "broker": "ok"},
                "models": {"test-echo": "loaded"},
                "running_jobs": 0,
            }
            assert (await client.get("/health")).json()["status"] == "ok"
            assert (await client.get("/nope")).status_code == 404
            assert (await client.post("/ready")).status_code == 405


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigterm_lets_the_running_job_finish(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn
) -> None:
    async with api(service_factory, worker_env) as service:
        headers = await service.user()
        worker = await spawn_worker("test-echo")
        running = await submit_echo(service, headers, "almost done", sleep_ms=1500)
        waiting = [await submit_echo(service, headers, f"next {i}", sleep_ms=0) for i in range(3)]
        for _ in range(400):
            r = await service.client.get(f"/api/jobs/{running}", headers=headers)
            if r.json()["status"] == "running":
                break
            await asyncio.sleep(0.025)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), 30) == 0
        job = (await service.client.get(f"/api/jobs/{running}", headers=headers)).json()
        assert job["status"] == "succeeded"
        assert job["attempts"] == 1  # finished by the worker that started it, not re-run

        # Jobs it had not started were handed back to the broker: the next worker runs them.
        await spawn_worker("test-echo")
        done = [await wait_for_job(service.client, headers, job_id) for job_id in waiting]
        assert [(j["status"], j["attempts"]) for j in done] == [("succeeded", 1)] * 3
        assert await assert_books_balance(service, [running, *waiting]) == {"succeeded": 4}


async def test_wait_is_woken_across_processes(
    service_factory: Any, worker_env: dict[str, str], spawn_worker: Spawn
) -> None:
    async with api(service_factory, worker_env) as service:
        headers = await service.user()
        events = service.app.state.components.events
        await asyncio.wait_for(events.listening.wait(), 10)
        await spawn_worker("test-echo")
        job_id = await submit_echo(service, headers, "over there", sleep_ms=300)
        started = asyncio.get_running_loop().time()
        r = await service.client.get(f"/api/jobs/{job_id}", params={"wait": 40}, headers=headers)
        assert r.json()["status"] == "succeeded"
        # The worker process's commit reached this API through PostgreSQL's NOTIFY, long before 40 s.
        assert asyncio.get_running_loop().time() - started < 15
