"""PostgreSQL goes away under load and comes back: the service answers 503 (never 500) while it is
gone, says so once in its log, heals by itself once the server is back, and loses no money.

The server is the test's own (tests/fixtures/pgserver.py), never the machine's shared one, so that
it can be stopped and started again; the test therefore runs once, not once per backend (it takes
no ``database_url``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mlservice.app import create_app
from mlservice.jobs.tables import Job, JobStatus
from mlservice.migrations.runner import upgrade
from mlservice.settings import Settings
from mlservice.wallet.tables import EntryType, LedgerEntry, Wallet
from tests.conftest import Service
from tests.fixtures.pgserver import PostgresServer, throwaway_postgres
from tests.fixtures.predictors import EchoText

USERS = 4
BONUS = 100
PRICE = EchoText.default_price
# The timeline, in seconds: the server stops this long after the clients start, stays down this
# long, and the clients go on this long after it is back (and the service is ready again).
DOWN_AFTER_S = 2.0
DOWN_FOR_S = 3.0
LOAD_AFTER_RECOVERY_S = 3.0
# Between one client's submissions: 4 clients over ~8 s stay within their 100 credits (33 runs at 3),
# so that submissions after the restart can still be accepted.
PAUSE_S = 0.2
LOGGER = "mlservice.dependencies"


@dataclass
class Answer:
    at: float  # loop time when the response came
    status: int
    retry_after: str | None
    body: Any


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    with throwaway_postgres("mlservice-outage", tcp=True) as server:
        yield server


def settings(server: PostgresServer, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        var_dir=tmp_path / "var",
        model_cache_dir=tmp_path / "models",
        database_url=server.sqlalchemy_url(),
        jwt_secret="test-secret-" + "x" * 40,
        workers=1,  # jobs run in this process
        rate_limits_enabled=False,
        # A job whose settle the outage cut is handed on soon after, not a minute later.
        job_lease_seconds=3,
        sweep_interval_seconds=0.5,
        relay_after_seconds=1.0,
    )


def body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def test_database_outage_under_load(
    own_server: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    await asyncio.to_thread(upgrade, own_server.sqlalchemy_url())
    app_settings = settings(own_server, tmp_path)
    app = create_app(app_settings, predictors={EchoText.slug: EchoText})
    loop = asyncio.get_running_loop()
    answers: list[Answer] = []
    ready_down: list[httpx.Response] = []
    ready_up: list[httpx.Response] = []
    restarted_at = math.inf
    load_until = math.inf

    async with app.router.lifespan_context(app):
        # Unhandled errors come back as the 500 a client would see, not as exceptions here.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            service = Service(app, client, app_settings)
            users = [await service.user() for _ in range(USERS)]

            async def submitter(headers: dict[str, str]) -> None:
                while loop.time() < load_until:
                    r = await client.post(
                        "/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=headers
                    )
                    answers.append(
                        Answer(loop.time(), r.status_code, r.headers.get("Retry-After"), body_of(r))
                    )
                    await asyncio.sleep(PAUSE_S)

            async def outage() -> None:
                nonlocal restarted_at, load_until
                try:
                    await asyncio.sleep(DOWN_AFTER_S)
                    await asyncio.to_thread(own_server.stop)  # pg_ctl stop -m fast: connections cut
                    down_at = loop.time()
                    await asyncio.sleep(DOWN_FOR_S / 2)
                    ready_down.append(await client.get("/ready"))
                    await asyncio.sleep(max(0.0, down_at + DOWN_FOR_S - loop.time()))
                    await asyncio.to_thread(own_server.start)  # the same data directory
                    restarted_at = loop.time()
                    # Ready again by itself (no restart of the app), within a few seconds.
                    while loop.time() < restarted_at + 15:
                        r = await client.get("/ready")
                        if r.status_code == 200:
                            ready_up.append(r)
                            break
                        await asyncio.sleep(0.2)
                finally:
                    load_until = min(load_until, loop.time() + LOAD_AFTER_RECOVERY_S)

            await asyncio.gather(outage(), *(submitter(headers) for headers in users))

            # -- the answers -----------------------------------------------------------------------
            statuses = sorted({a.status for a in answers})
            unexpected = [a for a in answers if a.status not in (201, 402, 503)]
            assert not unexpected, f"statuses {statuses}; first unexpected answers: {unexpected[:3]}"
            unavailable = [a for a in answers if a.status == 503]
            assert unavailable, f"no 503: the outage was not seen (statuses {statuses})"
            for a in unavailable:
                assert a.retry_after is not None, f"a 503 without Retry-After: {a}"
                assert isinstance(a.body, dict), a
                error = a.body["error"]
                assert error["code"] == "service_unavailable", a
                assert error["message"], a
                assert error["details"]["dependency"] == "database", a
            accepted_after = [a for a in answers if a.status == 201 and a.at > restarted_at]
            assert accepted_after, f"no submission accepted after the restart (statuses {statuses})"

            # -- readiness -------------------------------------------------------------------------
            assert ready_down, "/ready was not asked during the outage"
            down = ready_down[0]
            assert down.status_code == 503, down.text
            assert down.json()["checks"]["database"] != "ok", down.text
            assert ready_up, "/ready did not answer 200 within 15 s of the restart"
            assert ready_up[0].json()["checks"]["database"] == "ok", ready_up[0].text

            # -- the log: once when it went, once when it came back --------------------------------
            warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
            gone = [r for r in warnings if r.getMessage().startswith("database unreachable")]
            back = [r for r in warnings if r.getMessage().startswith("database reachable again")]
            logged = [r.getMessage() for r in warnings]
            assert len(gone) == 1, logged
            assert len(back) == 1, logged
            assert gone[0].created < back[0].created, logged

            # -- the money, once every accepted job is done ----------------------------------------
            accepted = {uuid.UUID(a.body["id"]) for a in answers if a.status == 201}
            await wait_until_every_job_is_finished(service, within=60)
            async with service.db.session() as session:
                jobs = (await session.scalars(select(Job))).all()
                assert accepted <= {job.id for job in jobs}, "an accepted job is missing"
                assert {job.cost for job in jobs} <= {PRICE}
                wallets = (await session.scalars(select(Wallet))).all()
                assert len(wallets) == USERS
                for account in wallets:
                    amount, held_delta = (
                        await session.execute(
                            select(
                                func.coalesce(func.sum(LedgerEntry.amount), 0),
                                func.coalesce(func.sum(LedgerEntry.held_delta), 0),
                            ).where(LedgerEntry.user_id == account.user_id)
                        )
                    ).one()
                    succeeded = sum(
                        1
                        for job in jobs
                        if job.user_id == account.user_id and job.status == JobStatus.succeeded
                    )
                    assert (account.balance, account.held) == (amount, held_delta), account.user_id
                    assert account.held == 0, account.user_id
                    assert account.balance == BONUS - PRICE * succeeded, account.user_id
                captured_twice = (
                    await session.execute(
                        select(LedgerEntry.job_id)
                        .where(LedgerEntry.type == EntryType.capture)
                        .group_by(LedgerEntry.job_id)
                        .having(func.count() > 1)
                    )
                ).all()
                assert not captured_twice, f"jobs captured twice: {captured_twice}"


async def wait_until_every_job_is_finished(service: Service, within: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        async with service.db.session() as session:
            unfinished = (
                await session.execute(
                    select(Job.status, func.count())
                    .where(Job.status.in_([JobStatus.queued, JobStatus.running]))
                    .group_by(Job.status)
                )
            ).all()
        if not unfinished:
            return
        if loop.time() > deadline:
            counts = {status: count for status, count in unfinished}
            raise AssertionError(f"jobs still unfinished after {within} s: {counts}")
        await asyncio.sleep(0.2)
