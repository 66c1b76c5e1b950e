"""A hypothesis state machine over one user's wallet, driven through the HTTP app and a worker run
by hand: top-ups, submissions with and without Idempotency-Key and their replays, jobs that
succeed, fail, are canceled or lose their lease to the sweeper, stale workers that report late,
price changes, and administrators' adjustments. After every step the ledger must explain the
wallet to the credit, and every hold must be resolved exactly once when its job ends.

With credit grants: bonus grants with an expiry and a priority, a clock of expiry the machine moves
(and the sweep that follows it), holds that span grants, refunds, and bursts of concurrent
submits. The machine keeps its own model of every grant (remaining, held) and of each job's draws;
after every step each grant's remainder and the wallet's totals must equal the entries (and the
model), nothing is overdrawn, and expiry has never touched held credit.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import uuid
from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
from mlservice.wallet import granting, grants
from mlservice.wallet import service as wallet_service
from mlservice.wallet.tables import (
    CreditGrant,
    EntryType,
    GrantPosting,
    Hold,
    HoldStatus,
    LedgerEntry,
    Wallet,
)
from tests.conftest import PASSWORD, Service, empty_database
from tests.fixtures.api import totals
from tests.fixtures.grants import check_grants
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
    refunded = "refunded"  # succeeded, then its charge given back


TERMINAL = {Status.succeeded, Status.failed, Status.canceled, Status.refunded}


@dataclass
class ModelGrant:
    """A grant as the machine predicts it."""

    id: int  # the database's (ids grow with creation, as the model's list does)
    kind: str
    priority: int = 50
    expires_at: datetime | None = None
    remaining: int = 0
    held: int = 0

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= at


def spending_order(g: ModelGrant) -> tuple[Any, ...]:
    # Written apart from the service's: lower priority first, earliest expiry (none last), bonus first.
    return (g.priority, g.expires_at is None, g.expires_at or datetime.min, g.kind != "bonus", g.id)


@dataclass
class ModelJob:
    """What the service must have done with one job, as the model predicts it."""

    text: str
    cost: int
    status: Status = Status.queued
    attempts: int = 0
    stale_attempts: list[int] = field(default_factory=list)  # attempts whose lease was swept
    draws: dict[int, int] = field(default_factory=dict)  # grant id → credits its hold drew on

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
        self.clock = [utcnow()]  # the clock grants expire by, moved by the machine alone

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
            self.grants: list[ModelGrant] = []
            if service.settings.signup_bonus > 0:
                self.grants.append(
                    ModelGrant(h.run(self._newest_grant()), "bonus", remaining=service.settings.signup_bonus)
                )
            self.price = h.run(self._set_price(EchoText.default_price))
            self.jobs: dict[uuid.UUID, ModelJob] = {}
            self.job_keys: dict[str, tuple[str, uuid.UUID]] = {}
            self.refill_keys: dict[str, int] = {}
            self.serial = 0

        # --- helpers ---

        @property
        def balance(self) -> int:
            return sum(g.remaining for g in self.grants)

        @property
        def held(self) -> int:
            return sum(g.held for g in self.grants)

        @property
        def now(self) -> datetime:
            return h.clock[0]

        def _spendable(self) -> int:
            return sum(g.remaining - g.held for g in self.grants if not g.expired(self.now))

        def _draw(self, amount: int) -> dict[int, int]:
            """Hold ``amount`` in the model: drawn on free, unexpired credit in spending order."""
            draws: dict[int, int] = {}
            for g in sorted(self.grants, key=spending_order):
                take = min(g.remaining - g.held, amount) if not g.expired(self.now) else 0
                if take > 0:
                    g.held += take
                    draws[g.id] = take
                    amount -= take
            assert amount == 0, "the model drew more than it had"
            return draws

        def _grant(self, grant_id: int) -> ModelGrant:
            return next(g for g in self.grants if g.id == grant_id)

        def _give_back(self, grant: ModelGrant, credits: int) -> None:
            """Credits come back to a grant's free credit; an expired grant loses them at once."""
            if grant.expired(self.now):
                grant.remaining -= credits

        def _sweep_model(self) -> int:
            removed = 0
            for g in self.grants:
                if g.expired(self.now) and g.remaining > g.held:
                    removed += g.remaining - g.held
                    g.remaining = g.held
            return removed

        async def _newest_grant(self) -> int:
            async with service.db.session() as session:
                newest = await session.scalar(
                    select(func.max(CreditGrant.id)).where(CreditGrant.user_id == self.user_id)
                )
            assert newest is not None
            return int(newest)

        async def _draws_of(self, job_id: uuid.UUID) -> dict[int, int]:
            async with service.db.session() as session:
                rows = await session.execute(
                    select(GrantPosting.grant_id, func.sum(GrantPosting.held_delta))
                    .where(GrantPosting.job_id == job_id)
                    .group_by(GrantPosting.grant_id)
                )
                return {g: int(n) for g, n in rows if n}

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
            for grant_id, credits in job.draws.items():
                grant = self._grant(grant_id)
                grant.held -= credits
                if status is Status.succeeded:
                    grant.remaining -= credits
                else:
                    self._give_back(grant, credits)

        # --- money in ---

        @rule(amount=st.integers(1, 60), keyed=st.booleans())
        def refill(self, amount: int, keyed: bool) -> None:
            headers = dict(self.headers)
            if keyed:
                key = f"refill-{uuid.uuid4().hex}"
                headers["Idempotency-Key"] = key
            r = h.run(client.post("/api/wallet/refill", json={"amount": amount}, headers=headers))
            assert r.status_code == 200, r.text
            self.grants.append(ModelGrant(h.run(self._newest_grant()), "paid", remaining=amount))
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
                if amount > 0:
                    self.grants.append(ModelGrant(h.run(self._newest_grant()), "bonus", remaining=amount))
                else:
                    taken = -amount
                    for g in sorted(self.grants, key=spending_order):
                        take = min(g.remaining - g.held, taken)
                        g.remaining -= take
                        taken -= take
                    assert taken == 0
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
            if self.price > self._spendable():
                assert r.status_code == 402, r.text
                return
            assert r.status_code == 201, r.text
            job_id = uuid.UUID(r.json()["id"])
            assert r.json()["cost"] == self.price
            self.jobs[job_id] = ModelJob(text, self.price, draws=self._draw(self.price))
            assert h.run(self._draws_of(job_id)) == self.jobs[job_id].draws, "the hold drew on other grants"
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
            job = self.jobs[job_id]
            if job.status in (Status.queued, Status.running):
                # A running job is canceled at once too; its worker's late report must not land.
                assert r.status_code == 200, r.text
                if job.status is Status.running:
                    job.stale_attempts.append(job.attempts)
                self._settle(job_id, Status.canceled)
            else:
                assert r.status_code == 409, r.text

        # --- grants, expiry, refunds, bursts ---

        @rule(
            amount=st.integers(1, 80),
            expires_in=st.one_of(st.none(), st.integers(1, 72)),
            priority=st.sampled_from([10, 50, 90]),
        )
        def grant_bonus(self, amount: int, expires_in: int | None, priority: int) -> None:
            expires_at = None if expires_in is None else self.now + timedelta(hours=expires_in)
            h.run(self._grant_bonus(amount, expires_at, priority))
            self.grants.append(
                ModelGrant(h.run(self._newest_grant()), "bonus", priority, expires_at, remaining=amount)
            )

        async def _grant_bonus(self, amount: int, expires_at: datetime | None, priority: int) -> None:
            async with service.db.session(write=True) as session:
                await granting.grant(
                    session, self.user_id, amount, expires_at=expires_at, priority=priority, note="machine"
                )

        @rule(hours=st.integers(1, 48))
        def time_passes(self, hours: int) -> None:
            """The clock of expiry moves on and the sweep runs: free credit of expired grants goes."""
            h.clock[0] += timedelta(hours=hours)
            before = h.run(self._expired_credits())
            h.run(self._sweep())
            assert h.run(self._expired_credits()) - before == self._sweep_model()

        async def _sweep(self) -> None:
            async with service.db.session(write=True) as session:
                await wallet_service.expire_due(session, self.now)

        async def _expired_credits(self) -> int:
            async with service.db.session() as session:
                taken = await session.scalar(
                    select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                        LedgerEntry.user_id == self.user_id, LedgerEntry.type == EntryType.expiry
                    )
                )
            return -int(taken or 0)

        @precondition(lambda self: self._jobs(Status.succeeded))
        @rule(data=st.data())
        def refund(self, data: st.DataObject) -> None:
            job_id = data.draw(st.sampled_from(self._jobs(Status.succeeded)))
            assert h.run(self._refund(job_id)) is True
            assert h.run(self._refund(job_id)) is False  # once only
            job = self.jobs[job_id]
            job.status = Status.refunded
            for grant_id, credits in job.draws.items():
                grant = self._grant(grant_id)
                grant.remaining += credits
                self._give_back(grant, credits)

        async def _refund(self, job_id: uuid.UUID) -> bool:
            async with service.db.session(write=True) as session:
                return await wallet_service.refund(session, job_id) is not None

        @rule(n=st.integers(2, 12))
        def concurrent_submits(self, n: int) -> None:
            """A burst of submits at once: exactly as many are accepted as the free credit covers."""
            self.serial += 1
            texts = [f"fine burst {self.serial}.{i}" for i in range(n)]

            async def burst() -> list[httpx.Response]:
                data = [{"model": EchoText.slug, "text": t} for t in texts]
                posts = (client.post("/api/jobs", data=d, headers=self.headers) for d in data)
                return list(await asyncio.gather(*posts))

            responses = h.run(burst())
            codes = [r.status_code for r in responses]
            fits = n if self.price == 0 else min(n, self._spendable() // self.price)
            assert sorted(codes) == [201] * fits + [402] * (n - fits), codes
            drawn: dict[int, int] = {}
            for text, r in zip(texts, responses, strict=True):
                if r.status_code == 201:
                    job_id = uuid.UUID(r.json()["id"])
                    draws = h.run(self._draws_of(job_id))
                    assert sum(draws.values()) == self.price
                    self.jobs[job_id] = ModelJob(text, self.price, draws=draws)
                    for grant_id, credits in draws.items():
                        drawn[grant_id] = drawn.get(grant_id, 0) + credits
            # Whatever order they were admitted in, together they drew as one spend of their sum.
            assert drawn == {g: c for g, c in self._draw(fits * self.price).items()}

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
            # Each grant's remainder and held credit equal its postings (and the model); expired
            # grants keep only held credit.
            found = await check_grants(service.db, self.user_id, self.now)
            assert [(g.id, g.kind, g.remaining, g.held) for g in found] == [
                (g.id, g.kind, g.remaining, g.held) for g in self.grants
            ], "the grants are not what the model predicts"

            assert set(jobs) == set(self.jobs)
            for job_id, expected in self.jobs.items():
                job, hold = jobs[job_id], holds.get(job_id)
                kinds = sorted(e.type for e in entries if e.job_id == job_id)
                assert (job.status, job.cost, job.attempts) == (
                    Status.succeeded if expected.status is Status.refunded else expected.status,
                    expected.cost,
                    expected.attempts,
                )
                assert hold is not None
                assert hold.amount == job.cost
                if expected.status is Status.refunded:
                    assert kinds == sorted([EntryType.hold, EntryType.capture, EntryType.refund]), kinds
                    assert hold.status == HoldStatus.refunded
                elif expected.status in TERMINAL:
                    settled = EntryType.capture if expected.status is Status.succeeded else EntryType.release
                    assert kinds == sorted([EntryType.hold, settled]), f"{job_id} {expected.status}: {kinds}"
                    assert hold.status == (
                        HoldStatus.captured if settled is EntryType.capture else HoldStatus.released
                    ), f"open hold on a {expected.status} job"
                else:
                    assert kinds == [EntryType.hold]
                    assert hold.status == HoldStatus.open

            r = await client.get("/api/wallet", headers=self.headers)
            body = r.json()
            assert totals(body) == {
                "balance": self.balance,
                "held": self.held,
                "available": self.balance - self.held,
            }
            live = [g for g in self.grants if g.remaining > 0 and not g.expired(self.now)]
            soon = self.now + timedelta(days=7)
            assert (body["paid"], body["bonus"], body["expiring"]) == (
                sum(g.remaining - g.held for g in live if g.kind == "paid"),
                sum(g.remaining - g.held for g in live if g.kind == "bonus"),
                sum(g.remaining - g.held for g in live if g.expires_at is not None and g.expires_at <= soon),
            )
            assert body["paid"] + body["bonus"] == body["available"]

    return WalletMachine


def test_wallet_state_machine(
    database_url: str,
    settings_factory: Callable[..., Settings],
    backend: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Jobs that fail on purpose log their tracebacks; only this suite's own numbers matter here.
    caplog.set_level(logging.CRITICAL, logger="mlservice.jobs")
    app_settings = settings_factory(workers=0, rate_limits_enabled=False)
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        h = loop.run_until_complete(start_harness(loop, stack, database_url, app_settings))
        monkeypatch.setattr(grants, "now", lambda: h.clock[0])
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
