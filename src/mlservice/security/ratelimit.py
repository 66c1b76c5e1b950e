"""Rate limits on logins, registrations, job submissions and API key creation.

Sliding windows from :pypi:`limits` (its sliding window counter): a rule of ``limit`` per
``period`` counts this period's requests plus the previous period's, weighted by how much of it
still overlaps the last ``period`` seconds. A burst that filled the limit just before a period
ended is still counted after it: no second burst passes at the boundary, as it would with fixed
windows. The weighting takes the previous period's requests as evenly spread, so paced traffic
can get up to twice the limit into one period that straddles a boundary (spread out, and within
the limit per period on average); the library's exact moving window would store a timestamp per
request, about 15 KB per busy key where this keeps two counters, for the same CPU per check.

Counters live in Redis when ``MLSERVICE_REDIS_URL`` is set, so every API process shares them
(a check is two Lua scripts of the library: the count, atomic, then the read of the quota the
headers report), and in this process's memory
otherwise (:mod:`mlservice.security.ratestores`). A limiter that cannot reach Redis lets requests
through and logs a warning: an outage of the counters must not become an outage of the service.

Every answer of a limited route says where its client stands, in the headers of the IETF draft
"RateLimit header fields for HTTP": ``RateLimit-Limit``, ``RateLimit-Remaining`` and
``RateLimit-Reset`` (seconds until the window frees its next request); a 429 adds ``Retry-After``.
Keys hold a digest of the identity (address, e-mail, user id), never the identity itself.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from ipaddress import IPv6Address, ip_address, ip_network
from typing import TYPE_CHECKING, Any, Final

from fastapi import Request
from limits import RateLimitItemPerSecond
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.types import Scope

from mlservice.errors import AppError, ErrorResponse
from mlservice.security.ratestores import CounterStore, memory_store, redis_store

if TYPE_CHECKING:
    from mlservice.security.rates import Rate
    from mlservice.settings import Settings

log = logging.getLogger(__name__)


def _integer_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer", "minimum": 0}}


RATE_LIMITED_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    429: {
        "model": ErrorResponse,
        "description": "Too many requests: retry after the seconds in the Retry-After header. Every "
        "answer of this route carries the RateLimit-* headers.",
        "headers": {
            "Retry-After": _integer_header("Seconds until a request would pass"),
            "RateLimit-Limit": _integer_header("Requests the window admits"),
            "RateLimit-Remaining": _integer_header("Requests left in the window"),
            "RateLimit-Reset": _integer_header("Seconds until the window frees its next request"),
        },
    }
}
# Where a limited route's request keeps the quota its answer reports (``scope["state"]``): the
# edge adds the headers to whatever response the route returns (a model or a Response of its own).
QUOTA_STATE: Final = "rate_limit_quota"
_LIMIT_HEADER = b"ratelimit-limit"


@dataclass(frozen=True, slots=True)
class Quota:
    """Where one key stands against its rule after a request was counted."""

    limit: int
    remaining: int
    reset_s: int  # seconds until the window admits one more request; at least 1

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, rule: str, quota: Quota) -> None:
        super().__init__(
            f"Too many requests; try again in {quota.reset_s} seconds.",
            rule=rule,
            retry_after=quota.reset_s,
        )
        self.headers = quota.headers() | {"Retry-After": str(quota.reset_s)}


class RateLimiter:
    """Named rules (``login``, ``register``, ...) checked against a store of counters."""

    # After a failure, the store is left alone this long: requests do not each wait on a dead server.
    RETRY_AFTER_FAILURE_S = 5.0

    def __init__(self, store: CounterStore, rules: dict[str, Rate | None]) -> None:
        self.store = store
        self.strategy = SlidingWindowCounterRateLimiter(store.storage)
        # The rule's name is the library's namespace: it starts every key of the rule.
        self.items = {
            name: RateLimitItemPerSecond(rate.limit, rate.period_s, namespace=name)
            for name, rate in rules.items()
            if rate is not None
        }
        self._down_until = 0.0
        self._down = False

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
        shared = bool(settings.redis_url) and any(rules.values())
        store = redis_store(settings.redis_url, settings.rate_limit_key_prefix) if shared else memory_store()
        return cls(store, rules)

    async def check(self, rule: str, *identity: str) -> Quota | None:
        """Count one request against ``rule`` for ``identity``: its quota, or None when the rule
        is off or the store unreachable (nothing is known then). Raises :class:`RateLimited` when
        over the limit."""
        item = self.items.get(rule)
        if item is None or (self._down and time.monotonic() < self._down_until):
            return None
        key = hashlib.sha256("\x1f".join(identity).encode()).hexdigest()[:32]
        try:
            allowed = await self.strategy.hit(item, key)
            # A second call: the library's hit answers only yes or no.
            stats = await self.strategy.get_window_stats(item, key)
        except self.store.errors as exc:
            self._went_down(exc)
            return None
        if self._down:
            self._down = False
            log.warning("rate limits are enforced again: Redis answers")
        reset_s = _whole_seconds(stats.reset_time - time.time(), item.get_expiry())
        quota = Quota(item.amount, stats.remaining, reset_s)
        if not allowed:
            raise RateLimited(rule, Quota(quota.limit, 0, quota.reset_s))
        return quota

    def _went_down(self, exc: BaseException) -> None:
        self._down, self._down_until = True, time.monotonic() + self.RETRY_AFTER_FAILURE_S
        log.warning(
            "rate limits are not enforced: Redis is unreachable (%s); retrying in %.0f s",
            exc,
            self.RETRY_AFTER_FAILURE_S,
        )

    async def close(self) -> None:
        await self.store.close()


def _whole_seconds(delta_s: float, period_s: int) -> int:
    """Whole seconds after which the next request passes: strictly past the library's moment (the
    count drops once it is behind), and a full period for a window opened this very millisecond,
    which the library reports as resetting now."""
    return math.floor(delta_s) + 1 if delta_s > 0 else period_s


def record_quota(request: Request, quota: Quota | None) -> None:
    """Keep the quota that the answer reports: of several rules (a login counts two), the one
    nearest its limit, as the draft asks."""
    if quota is None:
        return
    state = request.scope.setdefault("state", {})
    kept: Quota | None = state.get(QUOTA_STATE)
    if kept is None or quota.remaining < kept.remaining:
        state[QUOTA_STATE] = quota


def add_quota_headers(scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
    """The recorded quota's headers on a response about to start, unless it has its own (a 429)."""
    state = scope.get("state")
    quota: Quota | None = state.get(QUOTA_STATE) if state else None
    if quota is None or any(name.lower() == _LIMIT_HEADER for name, _ in headers):
        return
    headers.extend((name.lower().encode(), value.encode()) for name, value in quota.headers().items())


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
