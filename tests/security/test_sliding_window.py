"""The sliding window around a period's boundary (in memory on a controlled clock, in Redis on the
real one), the RateLimit-* headers of limited routes, and one Redis store shared by two limiters."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from limits.aio.storage import MemoryStorage

from mlservice.security.ratelimit import Quota, RateLimited, RateLimiter
from mlservice.security.rates import Rate
from mlservice.security.ratestores import SweptMemoryStorage, memory_store, redis_store
from tests.conftest import PASSWORD, Service
from tests.fixtures.predictors import EchoText
from tests.security.conftest import REDIS_URL, client_at, register

BOUNDARY = 60.0 * 30_000_000  # a multiple of every period below: memory windows start on one


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The wall clock, stopped one second before a boundary. The library reads ``time.time()``
    and offers no clock of its own; nothing else in these tests reads it."""
    stopped = Clock(BOUNDARY - 1)
    monkeypatch.setattr(time, "time", stopped)
    return stopped


async def passes(limiter: RateLimiter, rule: str, count: int, who: str = "alice") -> int:
    passed = 0
    for _ in range(count):
        try:
            await limiter.check(rule, who)
            passed += 1
        except RateLimited:
            pass
    return passed


async def test_memory_no_burst_of_twice_the_limit_at_a_boundary(clock: Clock) -> None:
    limiter = RateLimiter(memory_store(), {"submit": Rate(10, 60)})
    assert await passes(limiter, "submit", 15) == 10  # the last second of a period
    # (Half seconds keep the arithmetic off the whole numbers that floats would round either way.)
    clock.now += 2.5  # 1.5 s into the next period
    # A fixed window would admit 10 more now, 20 in 2.5 seconds. The previous period, 58.5/60 of
    # it still inside the last minute, counts as 9.75 (9 whole): one request passes.
    assert await passes(limiter, "submit", 10) == 1
    with pytest.raises(RateLimited) as refused:
        await limiter.check("submit", "alice")
    # The previous period counts under 9 just after 4.5 s more.
    assert refused.value.headers["Retry-After"] == "5"
    clock.now += 5
    assert await passes(limiter, "submit", 10) == 1
    clock.now += 24  # half way: the previous period counts 4.9, this one 2, so 4 more (9.9) pass
    assert await passes(limiter, "submit", 10) == 4
    clock.now += 120  # two periods later nothing is left
    assert await passes(limiter, "submit", 15) == 10
    # Others were never concerned.
    assert await passes(limiter, "submit", 10, who="bob") == 10
    await limiter.close()


async def test_memory_quota_counts_down(clock: Clock) -> None:
    limiter = RateLimiter(memory_store(), {"register": Rate(3, 60)})
    clock.now -= 29.5  # 30.5 s before the boundary, when one request is free again
    quotas = [await limiter.check("register", "198.51.100.7") for _ in range(3)]
    assert quotas == [Quota(3, 2, 31), Quota(3, 1, 31), Quota(3, 0, 31)]
    with pytest.raises(RateLimited) as refused:
        await limiter.check("register", "198.51.100.7")
    assert refused.value.headers == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "31",
        "Retry-After": "31",
    }
    assert refused.value.details == {"rule": "register", "retry_after": 31}
    clock.now += 31
    assert await limiter.check("register", "198.51.100.7") == Quota(3, 0, 20)
    await limiter.close()


async def test_memory_forgets_expired_counters(clock: Clock) -> None:
    store = memory_store()
    assert isinstance(store.storage, SweptMemoryStorage)
    store.storage.SWEEP_EVERY_S = 0.0
    limiter = RateLimiter(store, {"submit": Rate(1, 5)})
    for who in range(10):
        await limiter.check("submit", f"user-{who}")
    clock.now += 11  # past the two periods a counter lives
    await limiter.check("submit", "new")
    for _ in range(3):
        await asyncio.sleep(0)  # the sweep runs as a task of its own
    assert len(store.storage.storage) == 1
    await limiter.close()


async def test_memory_sweeps_are_spaced_out() -> None:
    # The hook replaced to space the library's sweeps; a release that renames it must fail here.
    assert hasattr(MemoryStorage, "_MemoryStorage__schedule_expiry")
    store = memory_store()
    limiter = RateLimiter(store, {"submit": Rate(100, 60)})
    await limiter.check("submit", "first")
    await asyncio.sleep(0)
    first_sweep = store.storage.timer
    assert first_sweep is not None
    for who in range(50):
        await limiter.check("submit", f"user-{who}")
        await asyncio.sleep(0)
    assert store.storage.timer is first_sweep  # not one sweep per request
    await limiter.close()


# -- Redis ----------------------------------------------------------------------------------------


async def test_redis_no_burst_of_twice_the_limit_at_a_boundary(redis_prefix: str) -> None:
    """Real time (Redis keeps its own clock): 5 per second, the first request opening the window."""
    limiter = RateLimiter(redis_store(REDIS_URL, redis_prefix), {"burst": Rate(5, 1)})
    try:
        opened = time.monotonic()
        assert await passes(limiter, "burst", 1) == 1
        await asyncio.sleep(max(0.0, opened + 0.85 - time.monotonic()))
        assert await passes(limiter, "burst", 6) == 4  # the window's end: the limit is reached
        await asyncio.sleep(max(0.0, opened + 1.1 - time.monotonic()))
        late = time.monotonic() - opened
        # Just past the boundary a fixed window would admit all 5 again. The previous second,
        # ~90 % of it still inside the last second, counts as 4: one passes (two if this run was
        # slow to wake up).
        after = await passes(limiter, "burst", 5)
        assert 1 <= after <= 2, f"{after} passed at {late:.2f} s"
        await asyncio.sleep(2.1)  # two windows later, nothing is left
        assert await passes(limiter, "burst", 7) == 5
    finally:
        await limiter.close()


async def test_one_redis_store_is_shared_by_two_limiters(redis_prefix: str) -> None:
    """As two API processes with the same URL and prefix would be."""
    rules = {"submit": Rate(3, 60)}
    first = RateLimiter(redis_store(REDIS_URL, redis_prefix), rules)
    second = RateLimiter(redis_store(REDIS_URL, redis_prefix), rules)
    other_prefix = RateLimiter(redis_store(REDIS_URL, redis_prefix + "other:"), rules)
    try:
        remaining = [
            quota.remaining
            for quota in [
                await first.check("submit", "alice"),
                await second.check("submit", "alice"),
                await first.check("submit", "alice"),
            ]
            if quota is not None
        ]
        assert remaining == [2, 1, 0]
        for limiter in (first, second):
            with pytest.raises(RateLimited) as refused:
                await limiter.check("submit", "alice")
            assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        assert await second.check("submit", "bob") == Quota(3, 2, 60)
        assert (await other_prefix.check("submit", "alice")) == Quota(3, 2, 60)
    finally:
        for limiter in (first, second, other_prefix):
            await limiter.close()


# -- the headers of limited routes ------------------------------------------------------------------


def quota_of(response: httpx.Response) -> tuple[int, int, int]:
    headers = response.headers
    return (
        int(headers["ratelimit-limit"]),
        int(headers["ratelimit-remaining"]),
        int(headers["ratelimit-reset"]),
    )


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
async def test_limited_routes_say_where_the_client_stands(
    service_factory: Any, redis_prefix: str, shared: bool
) -> None:
    store = {"redis_url": REDIS_URL, "rate_limit_key_prefix": redis_prefix} if shared else {}
    async with service_factory(
        predictors=[EchoText],
        workers=0,
        rate_limit_register="3/minute",
        rate_limit_submit="2/minute",
        **store,
    ) as service:
        counted = []
        for _ in range(3):
            r = await register(service.client)
            assert r.status_code == 201
            limit, remaining, reset = quota_of(r)
            assert limit == 3
            assert 1 <= reset <= 60
            counted.append(remaining)
        assert counted == [2, 1, 0]
        refused = await register(service.client)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert quota_of(refused)[:2] == (3, 0)
        assert 1 <= int(refused.headers["retry-after"]) == quota_of(refused)[2] <= 60

        # A route that answers with a Response of its own (the submit) and one under /v1.
        headers = await login_elsewhere(service)
        submitted = await service.client.post(
            "/api/jobs", data={"model": "test-echo", "text": "a"}, headers=headers
        )
        assert submitted.status_code == 201
        assert quota_of(submitted)[:2] == (2, 1)
        prediction = {"version": "test-echo", "input": {"text": "b"}}
        v1 = await service.client.post("/v1/predictions", json=prediction, headers=headers)
        assert v1.status_code == 201
        assert quota_of(v1)[:2] == (2, 0)
        problem = await service.client.post("/v1/predictions", json=prediction, headers=headers)
        assert problem.status_code == 429
        assert problem.json()["status"] == 429  # a problem document, with the same headers
        assert int(problem.headers["retry-after"]) >= 1
        assert quota_of(problem)[:2] == (2, 0)
        # Routes without a limit say nothing of one.
        assert "ratelimit-limit" not in (await service.client.get("/api/wallet", headers=headers)).headers


async def login_elsewhere(service: Service) -> dict[str, str]:
    """A user registered from another address (this one's registrations are used up)."""
    async with client_at(service, "203.0.113.50") as other:
        assert (await register(other, "submitter@example.com")).status_code == 201
    return await service.login("submitter@example.com")


async def test_a_login_reports_the_rule_nearest_its_limit(service_factory: Any) -> None:
    async with service_factory(rate_limit_login="3/minute", rate_limit_login_ip="10/minute") as service:
        for remaining in (2, 1, 0):
            r = await service.client.post(
                "/api/auth/jwt/login", data={"username": "x@example.com", "password": "p"}
            )
            assert r.status_code == 400
            assert quota_of(r)[:2] == (3, remaining)


async def test_cors_exposes_the_rate_limit_headers(service_factory: Any) -> None:
    async with service_factory(
        cors_origins="https://app.example.com", rate_limit_register="3/minute"
    ) as service:
        r = await service.client.post(
            "/api/auth/register",
            json={"email": "cors@example.com", "password": PASSWORD},
            headers={"Origin": "https://app.example.com"},
        )
        assert r.status_code == 201
        exposed = {name.strip().lower() for name in r.headers["access-control-expose-headers"].split(",")}
        assert {"ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "retry-after"} <= exposed
