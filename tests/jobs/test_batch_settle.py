"""Batches of plain successes settle together (one statement on PostgreSQL): each job is written
and charged once, only while its attempt owns it, and every ledger entry carries the totals it
left; and an idle worker starts a job without waiting out the batching window."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy import select, update

from mlservice.jobs.attempts import Claimed, Outcome
from mlservice.jobs.events import CHANNEL
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.settle import sweep
from mlservice.jobs.tables import Job
from mlservice.predictors.base import PredictOutput
from mlservice.queue.memory import gather_batch
from mlservice.types import utcnow
from mlservice.wallet.tables import Hold
from mlservice.webhooks.tables import WebhookDelivery
from tests.conftest import PG_SERVER, Service, wait_for_job
from tests.fixtures.api import submit, wallet
from tests.fixtures.predictors import PatientEcho, PlainEcho

PRICE = PlainEcho.default_price


def executor_of(service: Service) -> JobExecutor:
    components = service.app.state.components
    return JobExecutor(components.db, components.storage, components.pool, lease_seconds=60, max_attempts=2)


async def submit_plain(service: Service, headers: dict[str, str], text: str, **fields: Any) -> uuid.UUID:
    r = await submit(service, headers, text, model=PlainEcho.slug, **fields)
    assert r.status_code == 201, r.text
    return uuid.UUID(r.json()["id"])


def succeeded(claimed: list[Claimed]) -> dict[uuid.UUID, Outcome]:
    return {
        job.id: Outcome(prediction=PredictOutput({"echo": job.input_text}), processing_ms=1.5)
        for job in claimed
    }


async def assert_ledger_replays(service: Service, headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every entry, oldest first, is the previous totals moved by its own amounts; the last
    matches the wallet. Returns the entries oldest first."""
    r = await service.client.get("/api/wallet/transactions?limit=200", headers=headers)
    entries = list(reversed(r.json()["items"]))
    balance = held = 0
    for entry in entries:
        balance, held = balance + entry["amount"], held + entry["held_delta"]
        assert (entry["balance_after"], entry["held_after"]) == (balance, held), entries
    totals = await wallet(service, headers)
    assert (totals["balance"], totals["held"]) == (balance, held)
    return entries


async def test_a_batch_of_one_users_jobs_carries_the_running_totals(service_factory: Any) -> None:
    async with service_factory([PlainEcho], workers=0) as service:
        alice, bob = await service.user(), await service.user()
        owners = [alice, alice, alice, bob, alice]
        ids = [await submit_plain(service, owner, f"job {i}") for i, owner in enumerate(owners)]
        executor = executor_of(service)

        claimed = await executor.claim(ids)
        assert len(claimed) == 5
        settled = await executor.finish(claimed, succeeded(claimed), PlainEcho.slug)
        assert settled == dict.fromkeys(ids, "ack")

        for i, (job_id, owner) in enumerate(zip(ids, owners, strict=True)):
            job = (await service.client.get(f"/api/jobs/{job_id}", headers=owner)).json()
            assert (job["status"], job["output"], job["processing_ms"]) == (
                "succeeded",
                {"echo": f"job {i}"},
                1.5,
            )
        assert await wallet(service, alice) == {"balance": 100 - 4 * PRICE, "held": 0, "available": 88}
        assert await wallet(service, bob) == {"balance": 100 - PRICE, "held": 0, "available": 97}
        entries = await assert_ledger_replays(service, alice)
        captures = [e for e in entries if e["type"] == "capture"]
        assert len(captures) == 4
        # Four captures of one batch, each leaving the totals one capture further on.
        assert [(e["balance_after"], e["held_after"]) for e in captures] == [
            (100 - PRICE, 3 * PRICE),
            (100 - 2 * PRICE, 2 * PRICE),
            (100 - 3 * PRICE, PRICE),
            (100 - 4 * PRICE, 0),
        ]
        await assert_ledger_replays(service, bob)

        # Settling the same attempts again (a duplicate) changes nothing.
        assert await executor.finish(claimed, succeeded(claimed), PlainEcho.slug) == settled
        assert (await wallet(service, alice))["balance"] == 100 - 4 * PRICE
        assert len(await assert_ledger_replays(service, alice)) == len(entries)


async def test_a_batch_charges_only_the_attempts_that_still_own_their_jobs(service_factory: Any) -> None:
    async with service_factory([PlainEcho], workers=0) as service:
        headers = await service.user()
        ids = [await submit_plain(service, headers, f"job {i}") for i in range(3)]
        executor = executor_of(service)
        first = await executor.claim(ids)

        # The second job's lease runs out: the sweeper requeues it and another attempt claims it.
        lost = ids[1]
        async with service.db.session(write=True) as session:
            await session.execute(
                update(Job).where(Job.id == lost).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        async with service.db.session(write=True) as session:
            assert await sweep(session, service.app.state.components.publisher, max_attempts=2) == 1
        (second,) = await executor.claim([lost])
        assert second.attempt == 2

        # The first attempt's batch lands late: only the two jobs it still owns are written.
        await executor.finish(first, succeeded(first), PlainEcho.slug)
        async with service.db.session() as session:
            jobs = {j.id: j for j in await session.scalars(select(Job).where(Job.id.in_(ids)))}
            holds = {h.job_id: h for h in await session.scalars(select(Hold).where(Hold.job_id.in_(ids)))}
        assert [jobs[i].status for i in ids] == ["succeeded", "running", "succeeded"]
        assert (jobs[lost].attempts, jobs[lost].output) == (2, None)
        assert [holds[i].status for i in ids] == ["captured", "open", "captured"]
        assert await wallet(service, headers) == {"balance": 94, "held": 3, "available": 91}
        await assert_ledger_replays(service, headers)

        # The attempt that owns it settles it, and it is charged once.
        await executor.finish([second], succeeded([second]), PlainEcho.slug)
        done = (await service.client.get(f"/api/jobs/{lost}", headers=headers)).json()
        assert (done["status"], done["output"]) == ("succeeded", {"echo": "job 1"})
        assert await wallet(service, headers) == {"balance": 91, "held": 0, "available": 91}
        entries = await assert_ledger_replays(service, headers)
        assert sorted(e["job_id"] for e in entries if e["type"] == "capture") == sorted(map(str, ids))


async def test_batches_of_the_same_users_settle_concurrently(
    service_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with service_factory([PlainEcho], workers=0) as service:
        users = [await service.user() for _ in range(3)]
        ids = [await submit_plain(service, user, f"job {i}") for i in range(4) for user in users]
        first, second = executor_of(service), executor_of(service)
        one = await first.claim(ids[::2])
        other = await second.claim(ids[1::2])
        # Each batch moves all three wallets; settled at the same time, they must not deadlock.
        await asyncio.gather(
            first.finish(one, succeeded(one), PlainEcho.slug),
            second.finish(other, succeeded(other), PlainEcho.slug),
        )
        for user in users:
            assert await wallet(service, user) == {"balance": 88, "held": 0, "available": 88}
            entries = await assert_ledger_replays(service, user)
            assert [e["type"] for e in entries].count("capture") == 4
        assert "retrying" not in caplog.text


async def test_plain_successes_settle_beside_failures_in_one_transaction(service_factory: Any) -> None:
    async with service_factory([PlainEcho], workers=0) as service:
        alice, bob = await service.user(), await service.user()
        ids = [
            await submit_plain(service, alice, "ok 1"),
            await submit_plain(service, bob, "bad"),
            await submit_plain(service, alice, "ok 2"),
            await submit_plain(service, bob, "ok 3"),
        ]
        executor = executor_of(service)
        claimed = await executor.claim(ids)
        outcomes = succeeded(claimed)
        outcomes[ids[1]] = Outcome(error_code="text_not_allowed", error_message="No.")
        await executor.finish(claimed, outcomes, PlainEcho.slug)

        statuses = []
        for job_id, owner in zip(ids, [alice, bob, alice, bob], strict=True):
            statuses.append((await service.client.get(f"/api/jobs/{job_id}", headers=owner)).json()["status"])
        assert statuses == ["succeeded", "failed", "succeeded", "succeeded"]
        assert await wallet(service, alice) == {"balance": 94, "held": 0, "available": 94}
        assert await wallet(service, bob) == {"balance": 97, "held": 0, "available": 97}
        kinds = [e["type"] for e in await assert_ledger_replays(service, bob)]
        assert sorted(kinds[-2:]) == ["capture", "release"]
        await assert_ledger_replays(service, alice)


async def test_a_plain_success_with_a_webhook_writes_its_outbox_row(service_factory: Any) -> None:
    async with service_factory([PlainEcho], workers=0, webhook_allow_private=True) as service:
        headers = await service.user()
        hooked = await submit_plain(service, headers, "hooked", webhook="http://127.0.0.1:9/hook")
        quiet = await submit_plain(service, headers, "quiet")
        executor = executor_of(service)
        claimed = await executor.claim([hooked, quiet])
        await executor.finish(claimed, succeeded(claimed), PlainEcho.slug)

        async with service.db.session() as session:
            rows = list(await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))
        assert [(r.job_id, r.event) for r in rows] == [(hooked, "start"), (hooked, "completed")]
        assert rows[1].payload["status"] == "succeeded"
        assert rows[1].payload["output"] == {"echo": "hooked"}
        assert await wallet(service, headers) == {"balance": 94, "held": 0, "available": 94}


async def test_a_settled_batch_notifies_the_listeners(service_factory: Any, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's (SQLite wakes waiters in-process only)")
    async with service_factory([PlainEcho], workers=0) as service:
        headers = await service.user()
        ids = [await submit_plain(service, headers, f"n{i}") for i in range(3)]
        received: asyncio.Queue[str] = asyncio.Queue()
        url = service.db.engine.url
        listener = await asyncpg.connect(f"postgresql://{PG_SERVER}/{url.database}")
        try:
            await listener.add_listener(CHANNEL, lambda *args: received.put_nowait(args[-1]))
            executor = executor_of(service)
            claimed = await executor.claim(ids)
            await executor.finish(claimed, succeeded(claimed), PlainEcho.slug)
            payload = await asyncio.wait_for(received.get(), 10)
        finally:
            await listener.close()
        assert sorted(payload.split(",")) == sorted(map(str, ids))
        assert received.empty()


async def test_a_waiter_is_answered_when_its_plain_job_finishes(service_factory: Any) -> None:
    async with service_factory([PlainEcho]) as service:
        headers = await service.user()
        job_id = await submit_plain(service, headers, "wake me", params=json.dumps({"sleep_ms": 300}))
        started = time.perf_counter()
        r = await service.client.get(f"/api/jobs/{job_id}", params={"wait": 30}, headers=headers)
        assert r.json()["status"] == "succeeded"
        assert time.perf_counter() - started < 10  # woken by the finish, not by the end of the wait
        assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}


async def test_an_idle_worker_starts_a_job_without_waiting_for_a_batch(service_factory: Any) -> None:
    async with service_factory([PatientEcho]) as service:
        headers = await service.user()
        started = time.perf_counter()
        r = await submit(service, headers, "alone", model=PatientEcho.slug)
        job = await wait_for_job(service.client, headers, r.json()["id"], within=20)
        # The model's batching window is 30 s; nothing else was queued, so nothing waited for it.
        assert job["status"] == "succeeded"
        assert time.perf_counter() - started < 10


async def test_a_batch_waits_only_while_more_are_queued() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    asked: list[int] = []

    async def nothing_more(gathered: int) -> bool:
        asked.append(gathered)
        return False

    async def more_coming(gathered: int) -> bool:
        asked.append(gathered)
        return True

    queue.put_nowait(1)
    started = time.perf_counter()
    assert await gather_batch(queue, 4, 30, nothing_more) == [1]
    assert time.perf_counter() - started < 5
    assert asked == [1]

    # What is ready is taken without asking; a full batch goes without asking either.
    for item in (2, 3, 4, 5, 6):
        queue.put_nowait(item)
    assert await gather_batch(queue, 4, 30, nothing_more) == [2, 3, 4, 5]
    assert asked == [1]
    assert await gather_batch(queue, 4, 30, nothing_more) == [6]
    assert asked == [1, 1]

    # When more are on their way, the batch waits for them (up to its window).
    queue.put_nowait(7)
    asyncio.get_running_loop().call_later(0.2, queue.put_nowait, 8)
    assert await gather_batch(queue, 2, 30, more_coming) == [7, 8]
    assert asked == [1, 1, 1]
