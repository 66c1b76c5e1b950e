"""Accounts, the objects they own, and requests built for any route of the app."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select

from mlservice.apikeys.tables import ApiKey
from mlservice.faces import service as faces
from mlservice.faces.tables import FaceEntry
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.tables import Job
from mlservice.users.tables import User
from mlservice.wallet import granting
from mlservice.wallet.tables import LedgerEntry, Wallet
from tests.conftest import PASSWORD, Service
from tests.fixtures.predictors import FileEcho
from tests.security_suites.routes import Route, request_body_example


@dataclass(frozen=True)
class Account:
    email: str
    id: uuid.UUID
    headers: dict[str, str]


async def new_account(service: Service, *, admin: bool = False) -> Account:
    email = f"{'admin' if admin else 'user'}-{uuid.uuid4().hex[:12]}@example.com"
    if admin:
        from mlservice.users.usecases import create_admin

        await create_admin(service.db, service.settings, email, PASSWORD)
        headers = await service.login(email)
    else:
        headers = await service.user(email)
    me = await service.client.get("/api/users/me", headers=headers)
    assert me.status_code == 200, me.text
    return Account(email, uuid.UUID(me.json()["id"]), headers)


def executor_of(service: Service, *, max_attempts: int = 3) -> JobExecutor:
    """A worker driven by hand (the suites start the app with ``workers=0``)."""
    components = service.app.state.components
    return JobExecutor(
        components.db,
        components.storage,
        components.pool,
        lease_seconds=60,
        max_attempts=max_attempts,
    )


@dataclass
class Owned:
    """Objects one account owns: a value for every path parameter, and what must never leak."""

    values: dict[str, str]
    secrets: list[str] = field(default_factory=list)


async def owned_objects(service: Service, owner: Account, *, settled: bool) -> Owned:
    """A job with an uploaded input (run to success when ``settled``, else left queued), a face,
    a ledger entry, an API key; each carrying a secret that only the owner may ever read back."""
    secret = f"secret-{uuid.uuid4().hex}"
    r = await service.client.post(
        "/api/jobs",
        data={"model": FileEcho.slug},
        files={"file": (f"{secret}.bin", secret.encode(), "application/octet-stream")},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    if settled:
        await executor_of(service).run_batch(FileEcho.slug, [uuid.UUID(job_id)])
    async with service.db.session(write=True) as session:
        face = await faces.add_face(session, owner.id, secret, [0.0] * faces.EMBEDDING_SIZE, None)
        entry_id = await session.scalar(
            select(func.max(LedgerEntry.id)).where(LedgerEntry.user_id == owner.id)
        )
        # An unspent grant (spent last: priority 100), which an administrator may void.
        grant_id = (await granting.grant(session, owner.id, 1, priority=100, note="owned")).id
    r = await service.client.post("/api/keys", json={"name": secret}, headers=owner.headers)
    assert r.status_code == 201, r.text
    api_key = r.json()
    values = {
        "job_id": job_id,
        "key_id": api_key["id"],
        "name": "copy",  # the artifact FileEcho stores
        "face_id": str(face.id),
        "user_id": str(owner.id),
        "entry_id": str(entry_id),
        "grant_id": str(grant_id),
        "slug": "test-echo",
    }
    return Owned(values, [secret, owner.email, api_key["key"]])


async def owner_state(service: Service, owner: Account, owned: Owned) -> dict[str, Any]:
    """What a request by someone else must never change."""
    async with service.db.session() as session:
        user = await session.get(User, owner.id, populate_existing=True)
        wallet = await session.get(Wallet, owner.id, populate_existing=True)
        job = await session.get(Job, uuid.UUID(owned.values["job_id"]), populate_existing=True)
        face = await session.get(FaceEntry, uuid.UUID(owned.values["face_id"]), populate_existing=True)
        key = await session.get(ApiKey, uuid.UUID(owned.values["key_id"]), populate_existing=True)
        entries = await session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.user_id == owner.id)
        )
    assert user is not None
    assert wallet is not None
    return {
        "user": (user.email, user.is_active, user.is_superuser, user.is_verified, user.hashed_password),
        "wallet": (wallet.balance, wallet.held, entries),
        "job": None if job is None else (job.status, job.cost, job.user_id, job.output),
        "face": None if face is None else (face.label, face.user_id),
        "api_key": None if key is None else (key.revoked_at, key.user_id),
    }


_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def fill_path(route: Route, values: dict[str, str]) -> str:
    return _PARAM.sub(lambda m: values[m.group(1)], route.path)


# Valid bodies for the write routes, so a refusal is about who asks, never about what was sent.
# Routes not listed get the smallest body their OpenAPI schema accepts.
BodyFactory = Callable[[Account], dict[str, Any]]
BODIES: dict[str, BodyFactory] = {
    "POST /api/auth/register": lambda a: {
        "json": {"email": f"new-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD}
    },
    "POST /api/auth/jwt/login": lambda a: {"data": {"username": a.email, "password": PASSWORD}},
    "POST /api/auth/cookie/login": lambda a: {"data": {"username": a.email, "password": PASSWORD}},
    "POST /api/wallet/refill": lambda a: {"json": {"amount": 5}},
    # Each probe its own code: a code is redeemed once per user.
    "POST /api/admin/promo-codes": lambda a: {
        "json": {"code": f"P{uuid.uuid4().hex[:12]}", "amount": 1, "max_uses": 1}
    },
    "POST /api/jobs": lambda a: {"data": {"model": "test-echo", "text": "probe"}},
    "PATCH /api/admin/models/{slug}": lambda a: {"json": {"price": 3}},
    "POST /api/admin/users/{user_id}/adjustments": lambda a: {"json": {"amount": 1, "note": "probe"}},
    "PATCH /api/admin/users/{user_id}": lambda a: {"json": {"is_active": True}},
    "POST /api/admin/jobs/{job_id}/refund": lambda a: {"json": {"note": "probe"}},
}


def request_kwargs(spec: dict[str, Any], route: Route, account: Account) -> dict[str, Any]:
    """httpx keyword arguments with a valid body for ``route`` (none when it takes no body)."""
    if str(route) in BODIES:
        return BODIES[str(route)](account)
    example = request_body_example(spec, route)
    if example is None:
        return {}
    media_type, body = example
    if media_type == "application/json":
        return {"json": body}
    return {"data": body}


async def send(
    client: httpx.AsyncClient,
    route: Route,
    values: dict[str, str],
    headers: dict[str, str],
    kwargs: dict[str, Any],
) -> httpx.Response:
    # Each request carries only the credentials given: no cookie from an earlier login leaks in.
    client.cookies.clear()
    return await client.request(route.method, fill_path(route, values), headers=headers, **kwargs)
