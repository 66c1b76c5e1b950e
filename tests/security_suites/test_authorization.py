"""The authorization matrix: every route that takes an id, by {owner, other user, admin, anonymous}.

Routes are discovered from the app, and each path parameter gets a real object owned by a fresh
account, so a route added later is tested without touching this file; one with a path parameter
nobody here knows how to fill fails the suite until it is taught (``owned_objects``).

Rules:
* anonymous → 401 everywhere but on public routes;
* a user-owned object asked for by anybody else (another user, or an admin through the user API)
  → 404, never 403, never its data, never a change to it;
* admin routes → 403 for every non-admin, 401 anonymous, served for admins.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.conftest import Service
from tests.fixtures.predictors import EchoText, FileEcho
from tests.security_suites.actors import (
    Account,
    new_account,
    owned_objects,
    owner_state,
    request_kwargs,
    send,
)
from tests.security_suites.routes import Route, api_id_routes

log = logging.getLogger(__name__)

# Routes with a path parameter that anybody may call: nothing in them belongs to a user.
PUBLIC_ID_ROUTES = frozenset({"GET /api/models/{slug}"})

# The id routes the app had when this suite was written: discovery must at least find these
# (it failing silently would turn the matrix into an empty loop).
KNOWN_ID_ROUTES = frozenset(
    {
        "GET /api/jobs/{job_id}",
        "POST /api/jobs/{job_id}/cancel",
        "GET /api/jobs/{job_id}/input",
        "GET /api/jobs/{job_id}/artifacts/{name}",
        "DELETE /api/faces/{face_id}",
        "DELETE /api/keys/{key_id}",
        "GET /api/models/{slug}",
        "PATCH /api/admin/models/{slug}",
        "POST /api/admin/users/{user_id}/adjustments",
    }
)
# Path parameters ``owned_objects`` fills with a real object of the owner.
KNOWN_PARAMS = frozenset({"job_id", "name", "face_id", "user_id", "entry_id", "slug", "key_id", "grant_id"})

# Write routes that act on a finished job, so they get a settled one (a refund needs a charge).
SETTLED_WRITE_ROUTES = frozenset({"POST /api/admin/jobs/{job_id}/refund"})

ROLES = ("anonymous", "other", "admin", "owner")


@dataclass
class Cell:
    route: str
    role: str
    status: int
    problem: str | None


@dataclass
class Matrix:
    cells: list[Cell] = field(default_factory=list)
    cross_user_reads: int = 0
    cross_user_writes: int = 0
    escalations: int = 0

    def record(self, route: Route, role: str, response: httpx.Response, problem: str | None) -> None:
        self.cells.append(Cell(str(route), role, response.status_code, problem))

    @property
    def problems(self) -> list[str]:
        return [f"{c.route} as {c.role} → {c.status}: {c.problem}" for c in self.cells if c.problem]


def error_shaped(response: httpx.Response) -> bool:
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and isinstance(body.get("error"), dict) and "code" in body["error"]


def leaked(response: httpx.Response, secrets: list[str]) -> list[str]:
    text = response.text
    return [s for s in secrets if s in text] + [
        s for s in secrets if s in "".join(f"{k}: {v}" for k, v in response.headers.items())
    ]


def judge(
    route: Route, role: str, response: httpx.Response, secrets: list[str], matrix: Matrix
) -> str | None:
    """What is wrong with this answer, or None; counts cross-user reads and escalations."""
    status = response.status_code
    if status >= 500:
        return "server error"
    public = str(route) in PUBLIC_ID_ROUTES
    if role == "anonymous" and not public:
        if leaked(response, secrets) or status < 400:
            matrix.cross_user_reads += 1
        if status != 401 or not error_shaped(response):
            return "anonymous must get 401 with the error body"
        return None
    if public:
        return "public route refused" if status in (401, 403) else None
    rightful = "admin" if route.is_admin else "owner"
    if role == rightful:
        if status >= 300:
            # A refusal other than 401/403/404 is about the request: give the route a valid body.
            return f"{role} refused ({response.text[:200]}); a new route may need an entry in actors.BODIES"
        return None
    if route.is_admin:
        if status < 400:
            matrix.escalations += 1
        if status != 403 or not error_shaped(response):
            return "a non-admin must get 403 with the error body"
        return None
    # Another user, or an admin using the user API: the object does not exist for them.
    secrets_seen = leaked(response, secrets)
    if status < 400 or secrets_seen:
        matrix.cross_user_reads += 1
    if secrets_seen:
        return f"leaks {secrets_seen}"
    if status != 404 or not error_shaped(response):
        return "someone else's object must be a 404 with the error body"
    return None


async def run_matrix(service: Service) -> tuple[Matrix, list[Route]]:
    routes = api_id_routes(service.app)
    spec = service.app.openapi()
    other = await new_account(service)
    admin = await new_account(service, admin=True)
    matrix = Matrix()
    for route in routes:
        # A fresh owner per route: an admin route may well disable or change the account it is given.
        owner = await new_account(service)
        # Write routes get a queued job (a cancel by the wrong person would show); reads a finished one.
        settled = not route.is_write or str(route) in SETTLED_WRITE_ROUTES
        owned = await owned_objects(service, owner, settled=settled)
        before = await owner_state(service, owner, owned)
        actors: dict[str, Account | None] = {
            "anonymous": None,
            "other": other,
            "admin": admin,
            "owner": owner,
        }
        # Those who may not act go first; the object must be untouched before the rightful one acts.
        rightful = "admin" if route.is_admin else "owner"
        order = [r for r in ROLES if r != rightful] + [rightful]
        for role in order:
            account = actors[role]
            headers = account.headers if account else {}
            kwargs = request_kwargs(spec, route, account or owner)
            response = await send(service.client, route, owned.values, headers, kwargs)
            problem = judge(route, role, response, owned.secrets, matrix)
            matrix.record(route, role, response, problem)
            if role != rightful and str(route) not in PUBLIC_ID_ROUTES:
                after = await owner_state(service, owner, owned)
                if after != before:
                    matrix.cross_user_writes += 1
                    matrix.cells[-1].problem = f"changed the owner's objects: {before} → {after}"
    return matrix, routes


async def test_authorization_matrix(service_factory: Any, backend: str) -> None:
    async with service_factory(
        predictors=[EchoText, FileEcho], workers=0, rate_limits_enabled=False
    ) as service:
        routes = api_id_routes(service.app)
        names = {str(r) for r in routes}
        assert names >= KNOWN_ID_ROUTES, f"route discovery lost {sorted(KNOWN_ID_ROUTES - names)}"
        unknown = sorted({f"{r}: {{{p}}}" for r in routes for p in r.params if p not in KNOWN_PARAMS})
        assert not unknown, (
            f"routes with path parameters the matrix cannot fill yet: {unknown}; "
            "teach tests/security_suites/actors.py:owned_objects to create one for the owner"
        )

        matrix, routes = await run_matrix(service)

        by_role = Counter(c.role for c in matrix.cells)
        log.warning(
            "authorization matrix (%s): %d routes, %d cells %s, cross-user reads %d, cross-user writes %d, "
            "escalations %d",
            backend,
            len(routes),
            len(matrix.cells),
            dict(by_role),
            matrix.cross_user_reads,
            matrix.cross_user_writes,
            matrix.escalations,
        )
        assert len(matrix.cells) == len(routes) * len(ROLES)
        assert matrix.problems == []
        assert (matrix.cross_user_reads, matrix.cross_user_writes, matrix.escalations) == (0, 0, 0)
