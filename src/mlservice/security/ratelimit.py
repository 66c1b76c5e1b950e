"""Rate limits on logins, registrations, job submissions and API key creation.

Fixed windows: a key's first request opens a window of the rule's period, and the window admits
``limit`` requests; the next ones get 429 with ``Retry-After`` (the seconds until the window ends).
Counters live in Redis when ``MLSERVICE_REDIS_URL`` is set, so every API process shares them (one
Lua script per request: increment and expiry are atomic), and in this process's memory otherwise.
A limiter that cannot reach Redis lets requests through and logs a warning: an outage of the
counters must not become an outage of the service.

Keys hold a digest of the identity (address, e-mail, user id), never the identity itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address, ip_network
from typing import TYPE_CHECKING, Any, Final, Protocol

from fastapi import Request
from redis.asyncio import Redis
from redis.exceptions import RedisError

from mlservice.errors import AppError, ErrorResponse
from mlservice.security.rates import Rate

if TYPE_CHECKING:
    from mlservice.settings import Settings

log = logging.getLogger(__name__)

RATE_LIMITED_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    429: {
        "model": ErrorResponse,
        "description": "Too many requests: retry after the seconds in the Retry-After header",
    }
}


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, rule: str, retry_after_s: int) -> None:
        super().__init__(
            f"Too many requests; try again in {retry_after_s} seconds.",
            rule=rule,
            retry_after=retry_after_s,
        )
        self.headers = {"Retry-After": str(retry_after_s)}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after_s: int


class CounterStore(Protocol):
    async def hit(self, key: str, rate: Rate) -> Decision: ...

    async def close(self) -> None: ...


def _decision(count: int, rate: Rate, ttl_s: float) -> Decision:
    return Decision(count <= rate.limit, max(rate.limit - count, 0), max(1, math.ceil(ttl_s)))


class MemoryCounters:
    """Counters of this process. The event loop runs one ``hit`` at a time, so they are exact."""

    # Expired windows are swept once the table grows past this, so idle keys do not pile up.
    SWEEP_AT = 10_000

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key -> (count, window end)

    async def hit(self, key: str, rate: Rate) -> Decision:
        now = self._clock()
        count, ends = self._windows.get(key, (0, 0.0))
        if ends <= now:
            if len(self._windows) >= self.SWEEP_AT:
                self._sweep(now)
            count, ends = 0, now + rate.period_s
        count += 1
        self._windows[key] = (count, ends)
        return _decision(count, rate, ends - now)

    def _sweep(self, now: float) -> None:
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}

    async def close(self) -> None:
        self._windows.clear()


# KEYS[1]: the counter; ARGV[1]: the window in ms. Returns {count, ms left in the window}.
_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisCounters:
    """Counters in Redis, shared by every process that uses the same URL and key prefix."""

    # After a failure, Redis is left alone this long: requests do not each wait on a dead server.
    RETRY_AFTER_FAILURE_S = 5.0

    def __init__(self, url: str, *, timeout_s: float = 0.5) -> None:
        self._redis: Redis = Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, health_check_interval=30
        )
        self._script = self._redis.register_script(_HIT_SCRIPT)
        self._down_until = 0.0

    async def hit(self, key: str, rate: Rate) -> Decision:
        if time.monotonic() < self._down_until:
            return Decision(True, rate.limit, 0)
        try:
            count, ttl_ms = await self._script(keys=[key], args=[rate.period_s * 1000])
        except (RedisError, OSError) as exc:
            self._down_until = time.monotonic() + self.RETRY_AFTER_FAILURE_S
            log.warning(
                "rate limits are not enforced: Redis is unreachable (%s); retrying in %.0f s",
                exc,
                self.RETRY_AFTER_FAILURE_S,
            )
            return Decision(True, rate.limit, 0)
        return _decision(int(count), rate, int(ttl_ms) / 1000)

    async def close(self) -> None:
        await self._redis.aclose()


class RateLimiter:
    """Named rules (``login``, ``register``, ...) checked against a counter store."""

    def __init__(self, store: CounterStore, rules: dict[str, Rate | None], *, prefix: str = "") -> None:
        self.store = store
        self.rules = {name: rate for name, rate in rules.items() if rate is not None}
        self.prefix = prefix

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        rules: dict[str, Rate | None] = {}
        if settings.rate_limits_enabled:
            rules = {
                "login": settings.rate_limit_login,
                "login-ip": settings.rate_limit_login_ip,
                "register": settings.rate_limit_register,
                "submit": settings.rate_limit_submit,
                "api-key": settings.rate_limit_api_keys,
            }
        store: CounterStore = (
            RedisCounters(settings.redis_url) if settings.redis_url and rules else MemoryCounters()
        )
        return cls(store, rules, prefix=settings.rate_limit_key_prefix)

    def key(self, rule: str, identity: tuple[str, ...]) -> str:
        digest = hashlib.sha256("\x1f".join(identity).encode()).hexdigest()[:32]
        return f"{self.prefix}{rule}:{digest}"

    async def check(self, rule: str, *identity: str) -> None:
        """Count one request against ``rule`` for ``identity``; raise :class:`RateLimited` if over."""
        rate = self.rules.get(rule)
        if rate is None:
            return
        decision = await self.store.hit(self.key(rule, identity), rate)
        if not decision.allowed:
            raise RateLimited(rule, decision.retry_after_s)

    async def close(self) -> None:
        await self.store.close()


def client_address(request: Request) -> str:
    """Who the client is for a per-address limit: its IPv4 address, or its IPv6 /64 (one host
    commonly holds a whole /64, and would otherwise get a fresh allowance per address)."""
    host = request.client.host if request.client else "unknown"
    try:
        address = ip_address(host)
    except ValueError:
        return host
    if isinstance(address, IPv6Address) and address.ipv4_mapped is None:
        return str(ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped if isinstance(address, IPv6Address) else address)
