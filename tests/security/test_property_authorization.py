"""Property-level authorization: no request lets a user set their own role, flags, balance, a
job's cost, owner or status, whatever fields it sends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from mlservice.users.tables import User
from tests.conftest import PASSWORD, Service
from tests.fixtures.api import totals
from tests.fixtures.predictors import EchoText

ESCALATIONS: dict[str, Any] = {
    "is_superuser": True,
    "is_active": True,
    "is_verified": True,
    "role": "admin",
    "balance": 1_000_000,
}


async def stored_user(service: Service, email: str) -> User:
    async with service.db.session() as session:
        user = await session.scalar(select(User).where(User.email == email))
    assert user is not None
    return user


async def wallet(service: Service, headers: dict[str, str]) -> dict[str, int]:
    r = await service.client.get("/api/wallet", headers=headers)
    assert r.status_code == 200
    return totals(r.json())


async def test_registration_ignores_role_and_flags(service: Service) -> None:
    r = await service.client.post(
        "/api/auth/register",
        json={
            "email": "mallory@example.com",
            "password": PASSWORD,
            "is_superuser": True,
            "is_verified": True,
            "is_active": False,
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["role"] == "user"
    stored = await stored_user(service, "mallory@example.com")
    assert (stored.is_superuser, stored.is_verified, stored.is_active) == (False, False, True)
    headers = await service.login("mallory@example.com")
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
    admin_only = await service.client.get("/api/admin/models", headers=headers)
    assert admin_only.status_code == 403


@pytest.mark.parametrize(
    "extra",
    [
        {"role": "admin"},
        {"balance": 1_000_000},
        {"id": str(uuid.uuid4())},
        {"hashed_password": "x"},
        {"signup_bonus": 10_000},
    ],
    ids=lambda extra: next(iter(extra)),
)
async def test_registration_refuses_fields_it_does_not_know(service: Service, extra: dict[str, Any]) -> None:
    r = await service.client.post(
        "/api/auth/register", json={"email": "eve@example.com", "password": PASSWORD, **extra}
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_error"
    login = await service.client.post(
        "/api/auth/jwt/login", data={"username": "eve@example.com", "password": PASSWORD}
    )
    assert login.status_code == 400  # no account was created


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("PATCH", "", {"is_superuser": True}),
        ("PATCH", "", {"is_active": False}),
        ("PATCH", "", {"is_verified": True}),
        ("PATCH", "", {"role": "admin"}),
        ("PATCH", "", {"balance": 1_000_000}),
        ("PATCH", "", ESCALATIONS),
        ("PATCH", "", {"email": "new@example.com", **ESCALATIONS}),
        ("POST", "/adjustments", {"amount": 1_000_000, "note": "a present to myself"}),
    ],
    ids=["superuser", "inactive", "verified", "role", "balance", "all", "with-email", "adjustment"],
)
async def test_users_cannot_change_their_own_role_or_balance(
    service: Service, method: str, route: str, body: dict[str, Any]
) -> None:
    # There is no update route for one's own account: role, flags and balance change only through
    # the admin routes for an account, which refuse a signed-in non-admin whatever the body says.
    headers = await service.user("trudy@example.com")
    before = await stored_user(service, "trudy@example.com")
    r = await service.client.request(
        method, f"/api/admin/users/{before.id}{route}", json=body, headers=headers
    )
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "admin_required"
    after = await stored_user(service, "trudy@example.com")
    assert (after.is_superuser, after.is_active, after.is_verified) == (
        before.is_superuser,
        before.is_active,
        before.is_verified,
    )
    me = await service.client.get("/api/users/me", headers=headers)
    assert me.json()["role"] == "user"
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}


async def test_job_cost_owner_and_status_come_from_the_server(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], workers=0) as service:
        alice, bob = await service.user(), await service.user()
        bob_id = (await service.client.get("/api/users/me", headers=bob)).json()["id"]
        r = await service.client.post(
            "/api/jobs",
            data={
                "model": "test-echo",
                "text": "hello",
                "cost": "0",
                "price": "0",
                "user_id": bob_id,
                "owner": bob_id,
                "status": "succeeded",
                "output": '{"echo": "forged"}',
            },
            headers=alice,
        )
        # Fields a submission does not have are ignored; what matters is what the server decided.
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["cost"] == EchoText.default_price
        assert job["status"] == "queued"
        assert job["output"] is None
        assert (await service.client.get(f"/api/jobs/{job['id']}", headers=bob)).status_code == 404
        assert (await service.client.get("/api/jobs", headers=bob)).json()["total"] == 0
        assert (await wallet(service, alice))["held"] == EchoText.default_price
        assert await wallet(service, bob) == {"balance": 100, "held": 0, "available": 100}


@pytest.mark.parametrize("params", ['{"cost": 0}', '{"price": 0}', '{"user_id": "x"}'])
async def test_job_params_cannot_carry_billing_fields(service_factory: Any, params: str) -> None:
    async with service_factory(predictors=[EchoText], workers=0) as service:
        headers = await service.user()
        r = await service.client.post(
            "/api/jobs", data={"model": "test-echo", "text": "hi", "params": params}, headers=headers
        )
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "invalid_params"
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}


@pytest.mark.parametrize(
    "body",
    [
        {"amount": 10, "user_id": "OTHER"},
        {"amount": 10, "balance": 1_000_000},
        {"amount": 10, "type": "adjustment"},
        {"amount": 10, "held": -1000},
        {"amount": -1_000},
        {"amount": 10**30},
    ],
    ids=["user_id", "balance", "type", "held", "negative", "huge"],
)
async def test_top_up_touches_only_your_wallet_and_only_its_amount(
    service: Service, body: dict[str, Any]
) -> None:
    alice, bob = await service.user(), await service.user()
    bob_id = (await service.client.get("/api/users/me", headers=bob)).json()["id"]
    payload = {k: (bob_id if v == "OTHER" else v) for k, v in body.items()}
    r = await service.client.post("/api/wallet/refill", json=payload, headers=alice)
    assert r.status_code == 422, r.text
    assert await wallet(service, alice) == {"balance": 100, "held": 0, "available": 100}
    assert await wallet(service, bob) == {"balance": 100, "held": 0, "available": 100}


async def test_admin_routes_refuse_users_whatever_they_send(service: Service) -> None:
    headers = await service.user()
    me = (await service.client.get("/api/users/me", headers=headers)).json()
    r = await service.client.post(
        f"/api/admin/users/{me['id']}/adjustments",
        json={"amount": 1_000_000, "note": "gift to myself"},
        headers=headers,
    )
    assert r.status_code == 403
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
