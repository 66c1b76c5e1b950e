"""The rate limits as request dependencies: which rule a route counts against, and for whom.

The limiter itself (rules, counters in Redis or memory) is :mod:`mlservice.security.ratelimit`,
built by the composition root. Each check's quota is kept on the request, for the edge to put
in the answer's ``RateLimit-*`` headers.
"""

from __future__ import annotations

from fastapi import Request

from mlservice.security.ratelimit import RATE_LIMITED_RESPONSE, RateLimiter, client_address, record_quota
from mlservice.users.auth import CurrentUser

__all__ = [
    "RATE_LIMITED_RESPONSE",
    "limit_key_creation",
    "limit_logins",
    "limit_registrations",
    "limit_submissions",
]


def _limiter(request: Request) -> RateLimiter | None:
    # None before the lifespan has built the components (never while serving).
    components = getattr(request.app.state, "components", None)
    return components.rate_limiter if components is not None else None


async def limit_logins(request: Request) -> None:
    """Per address and e-mail (password guessing on one account), and per address (on many)."""
    limiter = _limiter(request)
    if limiter is None:
        return
    # FastAPI has parsed the login form before dependencies run; this reads its cached copy.
    username = (await request.form()).get("username")
    if not isinstance(username, str):
        return  # not a login (the same router has /logout): nothing to guess
    address = client_address(request)
    record_quota(request, await limiter.check("login-ip", address))
    record_quota(request, await limiter.check("login", address, username.strip().lower()))


async def limit_provider_logins(request: Request) -> None:
    """Per address, with the password logins: each login started through an OpenID provider keeps
    a row until it is answered or expires."""
    limiter = _limiter(request)
    if limiter is not None:
        record_quota(request, await limiter.check("login-ip", client_address(request)))


async def limit_registrations(request: Request) -> None:
    limiter = _limiter(request)
    if limiter is not None:
        record_quota(request, await limiter.check("register", client_address(request)))


async def limit_submissions(request: Request, user: CurrentUser) -> None:
    limiter = _limiter(request)
    if limiter is not None:
        record_quota(request, await limiter.check("submit", str(user.id)))


async def limit_key_creation(request: Request, user: CurrentUser) -> None:
    limiter = _limiter(request)
    if limiter is not None:
        record_quota(request, await limiter.check("api-key", str(user.id)))
