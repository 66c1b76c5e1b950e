"""A hypothesis state machine over one user's wallet, driven through the HTTP app and a worker run
by hand: top-ups, submissions with and without Idempotency-Key and their replays, jobs that
succeed, fail, are canceled or lose their lease to the sweeper, stale workers that report late,
price changes, and administrators' adjustments. After every step the ledger must explain the
wallet to the credit, and every hold must be resolved exactly once when its job ends.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select, update

from mlservice.app import create_app
from mlservice.jobs.attempts import Outcome
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.settle import record_outcome, sweep
from mlservice.jobs.tables import Job
from mlservice.predictors.base import PredictOutput
from mlservice.settings import Settings
from mlservice.types import utcnow
from mlservice.users.usecases import create_admin
from mlservice.wallet.tables import EntryType, Hold, HoldStatus, LedgerEntry, Wallet
from tests.conftest import PASSWORD, Service, empty_database
from tests.fixtures.predictors import EchoText

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 2  # the executor's and the sweeper's: a model failure is retried once
EXAMPLES = 12
STEPS = 30


class Status(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    canceled = "canceled"


TERMINAL = {Status.succeeded, Status.failed, Status.canceled}


@dataclass
class ModelJob:
    """What the service must have done with one job, as the model predicts it."""

    text: str
    cost: int
    status: Status = Status.queued
    attempts: int = 0
    stale_attempts: list[int] = field(default_factory=list)  # attempts whose lease was swept

    @property
    def fails(self) -> bool:
        return "boom" in self.text


class Harness:
    """The app with its lifespan on a private event loop (hypothesis' state machines are synchronous)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, service: Service, admin: dict[str, str]) -> None:
        self.loop = loop
        self.service = service
        self.admin = admin
        components = service.app.state.components
        self.executor = JobExecutor(
            components.db, components.storage, components.pool, lease_seconds=60, max_attempts=MAX_ATTEMPTS
        )
        self.steps = 0
        self.examples = 0

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


async def start_harness(
    loop: asyncio.AbstractEventLoop, stack: AsyncExitStack, database_url: str, app_settings: Settings
) -> Harness:
    await empty_database(database_url)
    app = create_app(app_settings, predictors={EchoText.slug: EchoText})
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    )
    service = Service(app, client, app_settings)
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    await create_admin(service.db, app_settings, email, PASSWORD)
    return Harness(loop, service, await service.login(email))


def wallet_machine(h: Harness) -> type[RuleBasedStateMachine]:
    service = h.service
    client = service.client

    class WalletMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            h.examples += 1
            self.headers = h.run(service.user())
            me = h.run(client.get("/api/users/me", headers=self.headers)).json()
            self.user_id = uuid.UUID(me["id"])
            self.balance = service.settings.signup_bonus
            self.held = 0
            self.price = h.run(self._set_price(EchoText.default_price))
            self.jobs: dict[uuid.UUID, ModelJob] = {}
            self.job_keys: dict[str, tuple[str, uuid.UUID]] = {}
            self.refill_keys: dict[str, int] = {}
            self.serial = 0

        # --- helpers ---

        def _jobs(self, *statuses: Status) -> list[uuid.UUID]:
            # In submission order: ids are random, an order by id would differ from one replay to the next.
            return [j for j, m in self.jobs.items() if m.status in statuses]

        async def _set_price(self, price: int) -> int:
            r = await client.patch(
                f"/api/admin/models/{EchoText.slug}", json={"price": price}, headers=h.admin
            )
            assert r.status_code == 200, r.text
            return price

        def _settle(self, job_id: uuid.UUID, status: Status) -> None:
            job = self.jobs[job_id]
            job.status = status
            self.held -= job.cost
            if status is Status.succeeded:
                self.balance -= job.cost

        # --- money in ---

        @rule(amount=st.integers(1, 60), keyed=st.booleans())
        def refill(self, amount: int, keyed: bool) -> None:
            headers = dict(self.headers)
            if keyed:
                key = f"refill-{uuid.uuid4().hex}"
                headers["Idempotency-Key"] = key
            r = h.run(client.post("/api/wallet/refill", json={"amount": amount}, headers=headers))
            assert r.status_code == 200, r.text
            self.balance += amount
            if keyed:
                self.refill_keys[key] = amount
            assert r.json()["wallet"] == {
                "balance": self.balance,
                "held": self.held,
                "available": self.balance - self.held,
            }

        @precondition(lambda self: self.refill_keys)
        @rule(data=st.data(), same=st.booleans())
        def replay_refill(self, data: st.DataObject, same: bool) -> None:
            key = data.draw(st.sampled_from(list(self.refill_keys)))
            amount = self.refill_keys[key] if same else self.refill_keys[key] + 1
            headers = {**self.headers, "Idempotency-Key": key}
            r = h.run(client.post("/api/wallet/refill", json={"amount": amount}, headers=headers))
            if same:
                assert r.status_code == 200, r.text
                assert r.headers.get("Idempotent-Replayed") == "true"
                assert r.json()["entry"]["amount"] == amount
            else:
                assert r.status_code == 422, r.text
                assert r.json()["error"]["code"] == "idempotency_key_reused"

        @rule(amount=st.integers(-150, 150).filter(bool))
        def admin_adjust(self, amount: int) -> None:
            r = h.run(
                client.post(
                    f"/api/admin/users/{self.user_id}/adjustments",
                    json={"amount": amount, "note": "state machine"},
                    headers=h.admin,
                )
            )
            if self.balance + amount >= self.held:
                assert r.status_code == 200, r.text
                self.balance += amount
            else:
                # Never below what the open holds reserve: available credits stay ≥ 0.
                assert r.status_code in (402, 409), r.text

        @rule(price=st.sampled_from([0, 1, 3, 40]))
        def change_price(self, price: int) -> None:
            # Jobs already submitted keep the price they were submitted at.
            self.price = h.run(self._set_price(price))

        # --- jobs ---

        @rule(fails=st.booleans(), keyed=st.booleans())
        def submit(self, fails: bool, keyed: bool) -> None:
            self.serial += 1
            text = f"{'boom' if fails else 'fine'} {self.serial}"
            headers = dict(self.headers)
            key = f"job-{uuid.uuid4().hex}"
            if keyed:
                headers["Idempotency-Key"] = key
            r = h.run(client.post("/api/jobs", data={"model": EchoText.slug, "text": text}, headers=headers))
            if self.price > self.balance - self.held:
                assert r.status_code == 402, r.text
                return
            assert r.status_code == 201, r.text
            job_id = uuid.UUID(r.json()["id"])
            assert r.json()["cost"] == self.price
            self.jobs[job_id] = ModelJob(text, self.price)
            self.held += self.price
            if keyed:
                self.job_keys[key] = (text, job_id)

        @precondition(lambda self: self.job_keys)
        @rule(data=st.data(), same=st.booleans())
        def replay_submit(self, data: st.DataObject, same: bool) -> None:
            key = data.draw(st.sampled_from(list(self.job_keys)))
            text, job_id = self.job_keys[key]
            body = {"model": EchoText.slug, "text": text if same else f"{text} changed"}
            r = h.run(client.post("/api/jobs", data=body, headers={**self.headers, "Idempotency-Key": key}))
            if same:
                assert r.status_code == 201, r.text
                assert r.headers.get("Idempotent-Replayed") == "true"
                assert uuid.UUID(r.json()["id"]) == job_id
            else:
                assert r.status_code == 422, r.text
                assert r.json()["error"]["code"] == "idempotency_key_reused"

        @precondition(lambda self: self._jobs(Status.queued))
        @rule(data=st.data())
        def run_job(self, data: st.DataObject) -> None:
            """A worker claims the job and runs the model: success captures, failure retries or releases."""
            job_id = data.draw(st.sampled_from(self._jobs(Status.queued)))
            h.run(h.executor.run_batch(EchoText.slug, [job_id]))
            job = self.jobs[job_id]
            job.attempts += 1
            if not job.fails:
                self._settle(job_id, Status.succeeded)
            elif job.attempts >= MAX_ATTEMPTS:
                self._settle(job_id, Status.failed)

        @precondition(lambda self: self._jobs(Status.queued))
        @rule(data=st.data())
        def claim_job(self, data: st.DataObject) -> None:
            """A worker claims the job and is then slow, or dies."""
            job_id = data.draw(st.sampled_from(self._jobs(Status.queued)))
            claimed = h.run(h.executor.claim([job_id]))
            h.executor.running.pop(job_id, None)
            job = self.jobs[job_id]
            job.attempts += 1
            job.status = Status.running
            assert [c.attempt for c in claimed] == [job.attempts]

        @precondition(lambda self: self._jobs(Status.running))
        @rule(data=st.data())
        def finish_running(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self._jobs(Status.running)))
            job = self.jobs[job_id]
            outcome = (
                Outcome(error_code="prediction_failed", error_message="exploded")
                if job.fails
                else Outcome(prediction=PredictOutput({"echo": job.text.upper()}), processing_ms=1.0)
            )
            h.run(self._record(job_id, job.attempts, outcome, expected=True))
            self._settle(job_id, Status.failed if job.fails else Status.succeeded)

        async def _record(self, job_id: uuid.UUID, attempt: int, outcome: Outcome, *, expected: bool) -> None:
            async with service.db.session(write=True) as session:
                recorded = await record_outcome(
                    session, job_id, attempt, outcome, storage=service.app.state.components.storage
                )
            assert recorded is expected

        @precondition(lambda self: self._jobs(Status.running))
        @rule(data=st.data())
        def lease_expires(self, data: st.DataObject) -> None:
            """The worker stopped renewing: the sweeper requeues the job, or fails it on its last attempt."""
            job_id = data.draw(st.sampled_from(self._jobs(Status.running)))
            h.run(self._expire_and_sweep(job_id))
            job = self.jobs[job_id]
            job.stale_attempts.append(job.attempts)
            if job.attempts >= MAX_ATTEMPTS:
                self._settle(job_id, Status.failed)
            else:
                job.status = Status.queued

        async def _expire_and_sweep(self, job_id: uuid.UUID) -> None:
            async with service.db.session(write=True) as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == job_id)
                    .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                )
            async with service.db.session(write=True) as session:
                swept = await sweep(
                    session, service.app.state.components.publisher, max_attempts=MAX_ATTEMPTS
                )
            assert swept >= 1

        @precondition(lambda self: any(j.stale_attempts for j in self.jobs.values()))
        @rule(data=st.data())
        def stale_worker_reports(self, data: st.DataObject) -> None:
            """The worker whose lease was swept wakes up with a result: it must not land, nor charge."""
            job_id = data.draw(st.sampled_from([j for j, m in self.jobs.items() if m.stale_attempts]))
            job = self.jobs[job_id]
            attempt = data.draw(st.sampled_from(job.stale_attempts))
            h.run(
                self._record(
                    job_id, attempt, Outcome(prediction=PredictOutput({"late": True})), expected=False
                )
            )

        @precondition(lambda self: self.jobs)
        @rule(data=st.data())
        def cancel(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(list(self.jobs)))
            r = h.run(client.post(f"/api/jobs/{job_id}/cancel", headers=self.headers))
            if self.jobs[job_id].status is Status.queued:
                assert r.status_code == 200, r.text
                self._settle(job_id, Status.canceled)
            else:
                assert r.status_code == 409, r.text

        # --- what must hold after every step ---

        @invariant()
        def ledger_explains_the_wallet(self) -> None:
            h.steps += 1
            h.run(self._check())

        async def _check(self) -> None:
            async with service.db.session() as session:
                wallet = await session.get(Wallet, self.user_id, populate_existing=True)
                assert wallet is not None
                amount, held_delta = (
                    await session.execute(
                        select(
                            func.coalesce(func.sum(LedgerEntry.amount), 0),
                            func.coalesce(func.sum(LedgerEntry.held_delta), 0),
                        ).where(LedgerEntry.user_id == self.user_id)
                    )
                ).one()
                open_holds = await session.scalar(
                    select(func.coalesce(func.sum(Hold.amount), 0)).where(
                        Hold.user_id == self.user_id, Hold.status == HoldStatus.open
                    )
                )
                jobs = {
                    j.id: j for j in await session.scalars(select(Job).where(Job.user_id == self.user_id))
                }
                holds = {
                    x.job_id: x
                    for x in await session.scalars(select(Hold).where(Hold.user_id == self.user_id))
                }
                entries = list(
                    await session.scalars(
                        select(LedgerEntry).where(
                            LedgerEntry.user_id == self.user_id, LedgerEntry.job_id.is_not(None)
                        )
                    )
                )
            assert (wallet.balance, wallet.held) == (amount, held_delta), (
                "the ledger does not sum to the wallet"
            )
            assert wallet.balance - wallet.held >= 0
            assert wallet.held == open_holds, "held is not the sum of the open holds"
            assert (wallet.balance, wallet.held) == (self.balance, self.held)

            assert set(jobs) == set(self.jobs)
            for job_id, expected in self.jobs.items():
                job, hold = jobs[job_id], holds.get(job_id)
                kinds = sorted(e.type for e in entries if e.job_id == job_id)
                assert (job.status, job.cost, job.attempts) == (
                    expected.status,
                    expected.cost,
                    expected.attempts,
                )
                assert hold is not None
                assert hold.amount == job.cost
                if expected.status in TERMINAL:
                    settled = EntryType.capture if expected.status is Status.succeeded else EntryType.release
                    assert kinds == sorted([EntryType.hold, settled]), f"{job_id} {expected.status}: {kinds}"
                    assert hold.status == (
                        HoldStatus.captured if settled is EntryType.capture else HoldStatus.released
                    ), f"open hold on a {expected.status} job"
                else:
                    assert kinds == [EntryType.hold]
                    assert hold.status == HoldStatus.open

            r = await client.get("/api/wallet", headers=self.headers)
            assert r.json() == {
                "balance": self.balance,
                "held": self.held,
                "available": self.balance - self.held,
            }

    return WalletMachine


def test_wallet_state_machine(
    database_url: str,
    settings_factory: Callable[..., Settings],
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Jobs that fail on purpose log their tracebacks; only this suite's own numbers matter here.
    caplog.set_level(logging.CRITICAL, logger="mlservice.jobs")
    app_settings = settings_factory(workers=0, rate_limits_enabled=False)
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        h = loop.run_until_complete(start_harness(loop, stack, database_url, app_settings))
        run_state_machine_as_test(
            wallet_machine(h),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                derandomize=True,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck),
            ),
        )
        log.warning("wallet state machine (%s): %d examples, %d steps", backend, h.examples, h.steps)
        assert h.examples >= EXAMPLES
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
