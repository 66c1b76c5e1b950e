"""``POST /api/jobs`` as one statement: what it checks (an active account, the available credit),
what it writes (and does not), its round trips on PostgreSQL, and ``Prefer: wait``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select

from mlservice.history.recording import RequestRecord
from mlservice.history.tables import PredictionRequest
from mlservice.jobs import usecases
from mlservice.jobs.errors import AccountInactive
from mlservice.jobs.tables import Job
from mlservice.jobs.validation import Submission
from mlservice.wallet.tables import Hold, LedgerEntry, Wallet
from tests.conftest import Service
from tests.fixtures.api import ledger_totals, submit, wallet
from tests.fixtures.history import user_id


async def test_a_deactivated_account_is_refused_at_once_and_charged_nothing(service: Service) -> None:
    headers, admin = await service.user(), await service.admin()
    owner = await user_id(service, headers)
    r = await service.client.patch(f"/api/admin/users/{owner}", json={"is_active": False}, headers=admin)
    assert r.status_code == 200, r.text
    # As a process that still remembered the account as active would: the submit's own statement
    # checks the account.
    components = service.app.state.components
    record = RequestRecord(user_id=owner, request_id="req-inactive")
    submission = Submission("test-echo", raw_params=None, data=None, filename=None, text="hello")
    with pytest.raises(AccountInactive) as refused:
        await usecases.submit_job(components, user_id=owner, submission=submission, record=record)
    assert (refused.value.status_code, refused.value.code) == (401, "account_inactive")
    async with service.db.session() as session:
        account = await session.get(Wallet, owner)
        assert account is not None
        assert (account.balance, account.held) == (100, 0)
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
        assert await session.scalar(select(func.count()).select_from(Hold)) == 0
        entries = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.user_id == owner)
        )
        assert entries == 1  # the signup bonus
        rows = (await session.scalars(select(PredictionRequest))).all()
        assert [(row.http_status, row.error_code, row.job_id) for row in rows] == [
            (401, "account_inactive", None)
        ]
    # Over HTTP, authentication refuses the account before the submit does.
    assert (await submit(service, headers)).status_code == 401


async def test_the_refusal_says_what_is_available(service: Service) -> None:
    headers, admin = await service.user(), await service.admin()
    await service.client.patch("/api/admin/models/test-echo", json={"price": 60}, headers=admin)
    assert (await submit(service, headers)).status_code == 201
    r = await submit(service, headers)
    assert r.status_code == 402
    error = r.json()["error"]
    assert (error["code"], error["details"]) == ("insufficient_credits", {"price": 60, "available": 40})
    assert error["message"] == "This run costs 60 credits; 40 available. Top up your wallet."
    assert await wallet(service, headers) == {"balance": 100, "held": 60, "available": 40}


async def test_concurrent_submits_of_many_accounts_never_overdraw(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin = await service.admin()
        await service.client.patch("/api/admin/models/test-echo", json={"price": 30}, headers=admin)
        users = [await service.user() for _ in range(4)]
        responses = await asyncio.gather(*(submit(service, h, f"{i}") for h in users for i in range(6)))
        assert sorted(r.status_code for r in responses).count(201) == 4 * 3
        for headers in users:
            assert await wallet(service, headers) == {"balance": 100, "held": 90, "available": 10}
            assert await ledger_totals(service, headers) == (100, 90, 4)


async def test_the_accepted_request_is_written_with_its_job(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        r = await submit(service, headers | {"X-Request-ID": "req-1"}, "hi there")
        assert r.status_code == 201, r.text
        body = r.json()
        async with service.db.session() as session:
            job = await session.get(Job, uuid.UUID(body["id"]))
            assert job is not None
            assert (job.status, job.cost, job.request_id, job.input_text) == (
                "queued",
                3,
                "req-1",
                "hi there",
            )
            hold = await session.scalar(select(Hold).where(Hold.job_id == job.id))
            assert hold is not None
            assert (hold.amount, hold.status, hold.user_id) == (3, "open", job.user_id)
            entry = await session.scalar(select(LedgerEntry).where(LedgerEntry.job_id == job.id))
            assert entry is not None
            assert (entry.type, entry.amount, entry.held_delta, entry.balance_after, entry.held_after) == (
                "hold",
                0,
                3,
                100,
                3,
            )
            request = await session.scalar(
                select(PredictionRequest).where(PredictionRequest.job_id == job.id)
            )
            assert request is not None
            assert (request.http_status, request.model_slug, request.input_bytes, request.replayed) == (
                201,
                "test-echo",
                len(b"hi there"),
                False,
            )
            assert request.request_id == "req-1"
        # The answer is the job as GET shows it.
        again = (await service.client.get(f"/api/jobs/{body['id']}", headers=headers)).json()
        assert again == body


async def test_an_idempotent_replay_is_the_first_answer_exactly(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        key = headers | {"Idempotency-Key": "once"}
        first = await submit(service, key, "same")
        again = await submit(service, key, "same")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert await wallet(service, headers) == {"balance": 100, "held": 3, "available": 97}


@contextmanager
def statements_of(service: Service) -> Iterator[list[str]]:
    """Every statement the app's engine sends, and every BEGIN, COMMIT and ROLLBACK, while the
    block runs (PostgreSQL)."""
    seen: list[str] = []
    engine = service.db.engine.sync_engine

    def on_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    def on_query(logged: Any) -> None:  # asyncpg's log of what it runs without a prepared statement
        seen.append(logged.query)

    def on_checkout(dbapi_connection: Any, *_: Any) -> None:
        raw = dbapi_connection._connection
        if on_query not in {cb.cb for cb in raw._query_loggers}:
            raw.add_query_logger(on_query)

    event.listen(engine, "before_cursor_execute", on_statement)
    event.listen(engine.pool, "checkout", on_checkout)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine.pool, "checkout", on_checkout)


async def test_a_submit_is_one_statement_on_postgresql(service_factory: Any, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("round trips are PostgreSQL's; SQLite runs in-process, in one short transaction")
    async with service_factory(workers=0) as service:
        headers = await service.user()
        assert (await submit(service, headers)).status_code == 201  # connections and statements warm
        with statements_of(service) as seen:
            r = await submit(service, headers)
            await asyncio.sleep(0.05)  # asyncpg reports on the next loop iterations
        assert r.status_code == 201, r.text
        writes = [s for s in seen if s.lstrip().upper().startswith(("WITH", "INSERT", "UPDATE", "DELETE"))]
        assert len(writes) == 1, seen
        assert "UPDATE wallets" in writes[0]
        assert "INSERT INTO jobs" in writes[0]
        assert not [s for s in seen if s.strip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))], seen


async def test_prefer_wait_answers_with_the_finished_job(service: Service) -> None:
    headers = await service.user()
    started = time.perf_counter()
    r = await submit(service, headers | {"Prefer": "wait=20"}, "slow", params='{"sleep_ms": 300}')
    assert r.status_code == 201, r.text
    assert time.perf_counter() - started < 10  # woken by the finish, not by the end of the wait
    assert r.headers["preference-applied"] == "wait=20"
    job = r.json()
    assert (job["status"], job["output"]["echo"]) == ("succeeded", "SLOW")
    assert job == (await service.client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
    assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}


async def test_prefer_wait_ends_with_the_job_as_it_is(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        started = time.perf_counter()
        r = await submit(service, headers | {"Prefer": "wait=1"})
        assert 0.9 < time.perf_counter() - started < 5
        assert (r.status_code, r.json()["status"]) == (201, "queued")
        # A replay with a wait waits for the first request's job.
        key = headers | {"Idempotency-Key": "w", "Prefer": "wait=1"}
        first = await submit(service, key)
        again = await submit(service, key)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 2


@pytest.mark.parametrize("prefer", ["wait=0", "wait=61", "wait=soon"])
async def test_a_bad_prefer_is_refused_before_anything_is_charged(service: Service, prefer: str) -> None:
    headers = await service.user()
    r = await submit(service, headers | {"Prefer": prefer})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_prefer"
    assert await ledger_totals(service, headers) == (100, 0, 1)
    # Preferences this server does not know are ignored (RFC 7240).
    assert (await submit(service, headers | {"Prefer": "respond-async"})).status_code == 201
