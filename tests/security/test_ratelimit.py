"""Rate limits on login, registration and job submission: in memory, and shared through Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
import pytest
from fastapi import Request
from redis.asyncio import Redis

from mlservice.security.ratelimit import RateLimited, RateLimiter, client_address
from mlservice.security.rates import Rate, parse_rate
from mlservice.security.ratestores import redis_store
from mlservice.settings import Settings
from tests.conftest import PASSWORD, Service
from tests.fixtures.predictors import EchoText
from tests.security.conftest import REDIS_URL, client_at, register


def assert_rate_limited(response: httpx.Response, rule: str, period_s: int = 60) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["details"]["rule"] == rule
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= period_s
    assert error["details"]["retry_after"] == retry_after
    # The draft's headers of the rule that refused it: nothing left, free again when Retry-After says.
    assert int(response.headers["ratelimit-remaining"]) == 0
    assert int(response.headers["ratelimit-reset"]) == retry_after
    assert int(response.headers["ratelimit-limit"]) >= 1


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/auth/jwt/login", data={"username": email, "password": password})


def test_defaults_are_those_of_a_real_service() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.rate_limits_enabled
    assert settings.rate_limit_login == Rate(10, 60)
    assert settings.rate_limit_login_ip == Rate(60, 60)
    assert settings.rate_limit_register == Rate(5, 60)
    assert settings.rate_limit_submit == Rate(120, 60)
    assert settings.redis_url == ""


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("10/minute", Rate(10, 60)),
        ("10 per minute", Rate(10, 60)),
        ("5/30s", Rate(5, 30)),
        ("100/hour", Rate(100, 3600)),
        ("2/day", Rate(2, 86400)),
        ("3/seconds", Rate(3, 1)),
        ("off", None),
        ("", None),
    ],
)
def test_rates_are_read_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, text: str, rate: Rate | None
) -> None:
    assert parse_rate(text) == rate
    monkeypatch.setenv("MLSERVICE_RATE_LIMIT_SUBMIT", text)
    assert Settings(_env_file=None).rate_limit_submit == rate  # type: ignore[call-arg]


@pytest.mark.parametrize("text", ["often", "10/fortnight", "0/minute", "ten/minute", "10/0s"])
def test_bad_rates_are_refused_at_startup(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        Settings(_env_file=None, rate_limit_login=text)  # type: ignore[call-arg]


async def test_registrations_are_limited_per_address(service_factory: Any) -> None:
    async with (
        service_factory(rate_limit_register="3/minute", forwarded_allow_ips="") as service,
        client_at(service, "198.51.100.7") as client,
        client_at(service, "203.0.113.9") as other,
    ):
        for _ in range(3):
            assert (await register(client)).status_code == 201
        assert_rate_limited(await register(client, "late@example.com"), "register")
        # Spoofing X-Forwarded-For does not help when the peer is not a trusted proxy.
        spoofed = await register(client, **{"X-Forwarded-For": "192.0.2.55"})
        assert_rate_limited(spoofed, "register")
        # Another address has its own allowance; the refused registration created nothing.
        assert (await register(other)).status_code == 201
        assert (await login(other, "late@example.com")).status_code == 400


async def test_addresses_behind_a_trusted_proxy_are_told_apart(service_factory: Any) -> None:
    async with (
        service_factory(rate_limit_register="2/minute", forwarded_allow_ips="10.0.0.0/8") as service,
        client_at(service, "10.1.2.3") as proxy,
    ):
        for _ in range(2):
            assert (await register(proxy, **{"X-Forwarded-For": "192.0.2.10"})).status_code == 201
        assert_rate_limited(await register(proxy, **{"X-Forwarded-For": "192.0.2.10"}), "register")
        # The proxy appends the peer it saw: what the client wrote to its left is not believed.
        forged = await register(proxy, **{"X-Forwarded-For": "192.0.2.99, 192.0.2.10"})
        assert_rate_limited(forged, "register")
        assert (await register(proxy, **{"X-Forwarded-For": "192.0.2.11"})).status_code == 201


async def test_logins_are_limited_per_address_and_email(service_factory: Any) -> None:
    async with service_factory(rate_limit_login="3/minute", rate_limit_login_ip="off") as service:
        assert (await register(service.client, "dave@example.com")).status_code == 201
        assert (await register(service.client, "erin@example.com")).status_code == 201
        for _ in range(3):
            assert (await login(service.client, "dave@example.com", "wrong-password-1")).status_code == 400
        # The right password does not get through either now, in any spelling of the address,
        # nor through the cookie login (one allowance for both).
        assert_rate_limited(await login(service.client, "dave@example.com"), "login")
        assert_rate_limited(await login(service.client, " DAVE@example.COM "), "login")
        cookie = await service.client.post(
            "/api/auth/cookie/login", data={"username": "dave@example.com", "password": PASSWORD}
        )
        assert_rate_limited(cookie, "login")
        assert "set-cookie" not in cookie.headers
        # Other accounts, and the same account from elsewhere, are unaffected.
        assert (await login(service.client, "erin@example.com")).status_code == 200
        async with client_at(service, "198.51.100.20") as elsewhere:
            assert (await login(elsewhere, "dave@example.com")).status_code == 200


async def test_logins_are_limited_per_address_across_emails(service_factory: Any) -> None:
    async with service_factory(rate_limit_login="off", rate_limit_login_ip="4/minute") as service:
        for i in range(4):
            assert (await login(service.client, f"nobody-{i}@example.com")).status_code == 400
        assert_rate_limited(await login(service.client, "somebody@example.com"), "login-ip")


async def test_logout_is_not_counted_as_a_login(service_factory: Any) -> None:
    async with service_factory(rate_limit_login="1/minute", rate_limit_login_ip="1/minute") as service:
        headers = await service.user()
        for _ in range(3):
            r = await service.client.post("/api/auth/jwt/logout", headers=headers)
            assert r.status_code != 429, r.text


async def submit(service: Service, headers: dict[str, str], text: str = "hello") -> httpx.Response:
    return await service.client.post("/api/jobs", data={"model": "test-echo", "text": text}, headers=headers)


async def test_submissions_are_limited_per_user(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], rate_limit_submit="2/minute", workers=0) as service:
        alice, bob = await service.user(), await service.user()
        for _ in range(2):
            assert (await submit(service, alice)).status_code == 201
        refused = await submit(service, alice)
        assert_rate_limited(refused, "submit")
        # Nothing was held or queued for the refused one.
        wallet = (await service.client.get("/api/wallet", headers=alice)).json()
        assert wallet["held"] == 2 * EchoText.default_price
        assert (await service.client.get("/api/jobs", headers=alice)).json()["total"] == 2
        # The limit is the user's, not the address's.
        assert (await submit(service, bob)).status_code == 201
        # Anonymous submissions are refused before they are counted.
        assert (await submit(service, {})).status_code == 401


async def test_limits_can_be_switched_off(service_factory: Any) -> None:
    async with service_factory(rate_limits_enabled=False, rate_limit_register="1/minute") as service:
        for _ in range(4):
            assert (await register(service.client)).status_code == 201


async def test_rate_limited_answers_are_documented(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    for path in ("/api/auth/register", "/api/auth/jwt/login", "/api/auth/cookie/login", "/api/jobs"):
        assert "429" in spec["paths"][path]["post"]["responses"], path
        headers = spec["paths"][path]["post"]["responses"]["429"]["headers"]
        assert {"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(headers)


# -- shared through Redis ----------------------------------------------------------------------------


async def test_two_apps_share_one_limit_through_redis(service_factory: Any, redis_prefix: str) -> None:
    shared = {
        "redis_url": REDIS_URL,
        "rate_limit_key_prefix": redis_prefix,
        "rate_limit_register": "3/minute",
    }
    async with service_factory(**shared) as first, service_factory(**shared) as second:
        async with client_at(first, "198.51.100.30") as a, client_at(second, "198.51.100.30") as b:
            assert (await register(a)).status_code == 201
            assert (await register(b)).status_code == 201
            assert (await register(a)).status_code == 201
            assert_rate_limited(await register(b), "register")
            assert_rate_limited(await register(a), "register")
        # The counter is in Redis, under the prefix, with an expiry, and without the address.
        # (The sliding window's current counter lives two periods: it is the previous one next.)
        redis = Redis.from_url(REDIS_URL)
        try:
            keys = [key.decode() async for key in redis.scan_iter(match=f"{redis_prefix}*")]
            assert len(keys) == 1
            assert keys[0].startswith(f"{redis_prefix}{{register/")
            assert "198.51.100.30" not in keys[0]
            assert 0 < await redis.pttl(keys[0]) <= 120_000
        finally:
            await redis.aclose()


async def test_a_different_prefix_is_a_different_limit(service_factory: Any, redis_prefix: str) -> None:
    async with (
        service_factory(
            redis_url=REDIS_URL, rate_limit_key_prefix=redis_prefix + "a:", rate_limit_register="1/minute"
        ) as first,
        service_factory(
            redis_url=REDIS_URL, rate_limit_key_prefix=redis_prefix + "b:", rate_limit_register="1/minute"
        ) as second,
    ):
        assert (await register(first.client)).status_code == 201
        assert (await register(second.client)).status_code == 201
        assert_rate_limited(await register(first.client), "register")


async def test_redis_counting_is_atomic_under_concurrency(redis_prefix: str) -> None:
    limiter = RateLimiter(redis_store(REDIS_URL, redis_prefix), {"burst": Rate(10, 30)})
    try:
        outcomes = await asyncio.gather(
            *(limiter.check("burst", "one") for _ in range(50)), return_exceptions=True
        )
    finally:
        await limiter.close()
    refused = [o for o in outcomes if isinstance(o, RateLimited)]
    assert len(refused) == 40
    assert sum(o is not None and not isinstance(o, BaseException) for o in outcomes) == 10
    assert all(1 <= int(r.headers["Retry-After"]) <= 30 for r in refused)


async def test_requests_go_through_when_redis_is_down(
    service_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mlservice.security.ratelimit")
    # Nothing listens on port 1: every connection is refused.
    async with service_factory(redis_url="redis://127.0.0.1:1/0", rate_limit_register="1/minute") as service:
        for _ in range(3):
            r = await register(service.client)
            assert r.status_code == 201
            # Nothing is known of the quota meanwhile, so nothing is claimed.
            assert "ratelimit-remaining" not in r.headers
    warnings = [r for r in caplog.records if "Redis is unreachable" in r.getMessage()]
    # One warning, then Redis is left alone for a while rather than tried (and logged) per request.
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING


async def test_redis_is_tried_again_after_the_pause(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mlservice.security.ratelimit")
    limiter = RateLimiter(redis_store("redis://127.0.0.1:1/0", "unused:"), {"k": Rate(1, 10)})
    limiter.RETRY_AFTER_FAILURE_S = 0.0
    try:
        for _ in range(2):
            assert await limiter.check("k", uuid.uuid4().hex) is None
    finally:
        await limiter.close()
    assert sum("Redis is unreachable" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    ("host", "identity"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_ipv6_clients_are_limited_per_64(host: str, identity: str) -> None:
    request = Request({"type": "http", "client": (host, 1), "headers": []})
    assert client_address(request) == identity
