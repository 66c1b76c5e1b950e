"""Privilege escalation: a normal user sends every write route of the app (discovered, not listed)
a valid request plus one field that should never be theirs to set (the admin role, a balance, a
job's cost, somebody else as the owner...), in the body, in the query string and in headers.
Whatever each answer was, afterwards nobody is admin who was not, every credit in a wallet is
explained by a legitimate ledger entry, and every job costs its price and belongs to its submitter.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, cast

from sqlalchemy import Table, func, select

from mlservice.apikeys.tables import ApiKey
from mlservice.catalog.tables import CatalogModel
from mlservice.jobs.tables import Job
from mlservice.users.tables import User
from mlservice.wallet.tables import EntryType, Hold, HoldStatus, LedgerEntry, Wallet
from tests.conftest import Service
from tests.fixtures.predictors import EchoText, FileEcho
from tests.security_suites.actors import Account, new_account, owned_objects, request_kwargs, send
from tests.security_suites.routes import api_write_routes

log = logging.getLogger(__name__)

# fastapi-users types the user's columns as plain attributes; the table has them as columns.
users = cast(Table, User.__table__)
GRANT = 1_000  # credits the admin gives the attacker up front, so submissions never run dry
KNOWN_WRITE_ROUTES = frozenset(
    {
        "POST /api/auth/register",
        "POST /api/auth/jwt/login",
        "POST /api/wallet/refill",
        "POST /api/jobs",
        "POST /api/jobs/{job_id}/cancel",
        "DELETE /api/faces/{face_id}",
        "PATCH /api/admin/models/{slug}",
        "POST /api/admin/users/{user_id}/adjustments",
    }
)


def escalation_fields(victim: Account) -> dict[str, Any]:
    return {
        "is_superuser": True,
        "is_admin": True,
        "admin": True,
        "role": "admin",
        "roles": ["admin"],
        "scope": "admin",
        "is_verified": True,
        "balance": 10**9,
        "held": 0,
        "available": 10**9,
        "credits": 10**9,
        "amount": 10**6,
        "cost": 0,
        "price": 0,
        "user_id": str(victim.id),
        "owner_id": str(victim.id),
        "owner": str(victim.id),
        "id": str(victim.id),
        "status": "succeeded",
        "attempts": 0,
    }


ESCALATION_HEADERS = {
    "X-User-Id": "",  # the victim's id, filled in
    "X-Role": "admin",
    "X-Admin": "true",
    "X-Forwarded-User": "",  # the admin's e-mail, filled in
    "X-Admin-Token": "guess",
}


def variants(base: dict[str, Any], fields: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The base request with one extra field at a time (in its body), and with all of them as query."""
    out: list[tuple[str, dict[str, Any]]] = []
    for name, value in fields.items():
        if "json" in base and isinstance(base["json"], dict):
            if name not in base["json"]:
                out.append((f"body:{name}", {**base, "json": {**base["json"], name: value}}))
        elif "data" in base:
            if name not in base["data"]:
                form_value = value if isinstance(value, str) else str(value).lower()
                out.append((f"form:{name}", {**base, "data": {**base["data"], name: form_value}}))
        else:
            # No body: offer one anyway, a route might read it.
            out.append((f"body:{name}", {**base, "json": {name: value}}))
    query = {k: v if isinstance(v, str) else str(v).lower() for k, v in fields.items() if k != "roles"}
    out.append(("query", {**base, "params": query}))
    return out


async def audit(
    service: Service,
    attacker: Account,
    victim: Account,
    admin: Account,
    successful_refills: int,
    refill_amount: int,
) -> list[str]:
    """Every way the attempts could have paid off; empty when none did."""
    problems: list[str] = []
    me = (await service.client.get("/api/users/me", headers=attacker.headers)).json()
    if me.get("role") != "user":
        problems.append(f"the attacker's role is {me.get('role')}")
    probe = await service.client.get("/api/admin/users", headers=attacker.headers)
    if probe.status_code != 403:
        problems.append(f"the attacker reads the admin API: {probe.status_code}")
    async with service.db.session() as session:
        admins = set(await session.scalars(select(users.c.email).where(users.c.is_superuser.is_(True))))
        if admins != {admin.email}:
            problems.append(f"admins are now {sorted(admins)}")
        verified = list(await session.scalars(select(users.c.email).where(users.c.is_verified.is_(True))))
        if verified:
            problems.append(f"accounts verified by their own request: {verified}")
        for wallet in await session.scalars(select(Wallet)):
            amount, held_delta = (
                await session.execute(
                    select(
                        func.coalesce(func.sum(LedgerEntry.amount), 0),
                        func.coalesce(func.sum(LedgerEntry.held_delta), 0),
                    ).where(LedgerEntry.user_id == wallet.user_id)
                )
            ).one()
            open_holds = await session.scalar(
                select(func.coalesce(func.sum(Hold.amount), 0)).where(
                    Hold.user_id == wallet.user_id, Hold.status == HoldStatus.open
                )
            )
            if (wallet.balance, wallet.held) != (amount, held_delta) or wallet.held != open_holds:
                problems.append(f"wallet {wallet.user_id} is not its ledger")
        entries = Counter(
            (row.user_id, row.type)
            for row in (await session.execute(select(LedgerEntry.user_id, LedgerEntry.type))).all()
        )
        topups = list(
            await session.scalars(
                select(LedgerEntry.amount).where(
                    LedgerEntry.user_id == attacker.id, LedgerEntry.type == EntryType.topup
                )
            )
        )
        if topups != [refill_amount] * successful_refills:
            problems.append(f"top-ups {topups}, expected {successful_refills} of {refill_amount}")
        if entries[(attacker.id, EntryType.adjustment)] != 1:
            problems.append("the attacker's wallet was adjusted")
        victim_wallet = await session.get(Wallet, victim.id)
        assert victim_wallet is not None
        if (victim_wallet.balance, victim_wallet.held) != (service.settings.signup_bonus, 0):
            problems.append("the victim's wallet changed")
        victim_keys = await session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.user_id == victim.id)
        )
        if victim_keys:
            problems.append(f"the victim has {victim_keys} API keys made by someone else")
        for (user_id, kind), count in entries.items():
            if user_id not in (attacker.id, admin.id) and (kind, count) != (EntryType.signup_bonus, 1):
                problems.append(f"{user_id} has {count} {kind} entries")
        prices = {
            slug: price
            for slug, price in await session.execute(select(CatalogModel.slug, CatalogModel.price))
        }
        if prices != {EchoText.slug: EchoText.default_price, FileEcho.slug: FileEcho.default_price}:
            problems.append(f"prices are now {prices}")
        for job in await session.scalars(select(Job)):
            if job.user_id != attacker.id:
                problems.append(f"job {job.id} belongs to {job.user_id}")
            if job.cost != prices[job.model_slug]:
                problems.append(f"job {job.id} costs {job.cost}")
            if job.status not in ("queued", "canceled"):  # nothing runs them (workers=0)
                problems.append(f"job {job.id} is {job.status}")
    return problems


async def test_no_field_grants_privileges(service_factory: Any, backend: str) -> None:
    async with service_factory(
        predictors=[EchoText, FileEcho], workers=0, rate_limits_enabled=False
    ) as service:
        routes = api_write_routes(service.app)
        names = {str(r) for r in routes}
        assert names >= KNOWN_WRITE_ROUTES, f"route discovery lost {sorted(KNOWN_WRITE_ROUTES - names)}"
        spec = service.app.openapi()
        attacker, victim = await new_account(service), await new_account(service)
        admin = await new_account(service, admin=True)
        r = await service.client.post(
            f"/api/admin/users/{attacker.id}/adjustments",
            json={"amount": GRANT, "note": "budget"},
            headers=admin.headers,
        )
        assert r.status_code == 200, r.text
        fields = escalation_fields(victim)
        headers = {
            **attacker.headers,
            **ESCALATION_HEADERS,
            "X-User-Id": str(victim.id),
            "X-Forwarded-User": admin.email,
        }
        attempts, admin_route_successes, refills = 0, [], 0
        refill_amount = request_kwargs(
            spec, next(r for r in routes if str(r) == "POST /api/wallet/refill"), attacker
        )["json"]["amount"]
        for route in routes:
            owned = await owned_objects(service, attacker, settled=False)
            base = request_kwargs(spec, route, attacker)
            tries = [*variants(base, fields), ("headers", base)]
            for where, kwargs in tries:
                sent_headers = headers if where == "headers" else attacker.headers
                response = await send(service.client, route, owned.values, sent_headers, kwargs)
                attempts += 1
                assert response.status_code < 500, f"{route} {where}: {response.status_code} {response.text}"
                if route.is_admin and response.status_code < 400:
                    admin_route_successes.append(f"{route} {where}")
                if str(route) == "POST /api/wallet/refill" and response.status_code == 200:
                    refills += 1

        problems = await audit(service, attacker, victim, admin, refills, refill_amount)
        escalations = len(problems) + len(admin_route_successes)
        log.warning(
            "privilege escalation (%s): %d write routes, %d attempts, escalations %d",
            backend,
            len(routes),
            attempts,
            escalations,
        )
        assert admin_route_successes == []
        assert problems == []
        assert escalations == 0
