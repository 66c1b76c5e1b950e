from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, Service
from tests.fixtures.api import totals


async def test_register_login_me_and_bonus(service: Service) -> None:
    r = await service.client.post(
        "/api/auth/register", json={"email": "Alice@Example.com", "password": PASSWORD, "is_superuser": True}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["email"] == "alice@example.com"
    assert body["role"] == "user"  # a client cannot make itself an admin
    assert "hashed_password" not in body

    headers = await service.login("alice@example.com")
    me = (await service.client.get("/api/users/me", headers=headers)).json()
    assert me["id"] == body["id"]
    wallet = (await service.client.get("/api/wallet", headers=headers)).json()
    assert totals(wallet) == {"balance": 100, "held": 0, "available": 100}


async def test_duplicate_email_is_400_with_clear_message(service: Service) -> None:
    payload = {"email": "bob@example.com", "password": PASSWORD}
    assert (await service.client.post("/api/auth/register", json=payload)).status_code == 201
    r = await service.client.post("/api/auth/register", json={**payload, "email": "BOB@example.com"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "email_taken"
    assert "already exists" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("password", "fragment"),
    [("short1", "at least 8"), ("onlyletters", "letters and digits"), ("1234567890", "letters and digits")],
)
async def test_password_policy(service: Service, password: str, fragment: str) -> None:
    r = await service.client.post(
        "/api/auth/register", json={"email": "carol@example.com", "password": password}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_password"
    assert fragment in r.json()["error"]["message"]


async def test_bad_login_and_missing_token(service: Service) -> None:
    await service.user("dave@example.com")
    r = await service.client.post(
        "/api/auth/jwt/login", data={"username": "dave@example.com", "password": "wrong123"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_credentials"
    r = await service.client.get("/api/users/me")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_authenticated"
    r = await service.client.get("/api/users/me", headers={"Authorization": "Bearer not-a-jwt"})
    assert r.status_code == 401


async def test_cookie_login_authenticates_the_same_routes(service: Service) -> None:
    await service.user("erin@example.com")
    r = await service.client.post(
        "/api/auth/cookie/login", data={"username": "erin@example.com", "password": PASSWORD}
    )
    assert r.status_code == 204
    cookie = r.cookies.get("mlservice_auth")
    assert cookie
    assert "httponly" in r.headers["set-cookie"].lower()
    service.client.cookies.set("mlservice_auth", cookie)
    me = await service.client.get("/api/users/me")
    assert me.status_code == 200
    assert me.json()["email"] == "erin@example.com"


async def test_admin_routes_refuse_users(service: Service) -> None:
    headers = await service.user()
    r = await service.client.patch("/api/admin/models/test-echo", json={"price": 1}, headers=headers)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "admin_required"


async def test_hashes_of_earlier_releases_verify_and_are_upgraded(service: Service) -> None:
    """Accounts made before (bcrypt hashes among them) still log in; the hash becomes Argon2id."""
    import bcrypt
    from sqlalchemy import select, update

    from mlservice.users.tables import User

    await service.user("old-timer@example.com")
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    async with service.db.session(write=True) as session:
        await session.execute(
            update(User).where(User.email == "old-timer@example.com").values(hashed_password=legacy)
        )
    await service.login("old-timer@example.com")
    async with service.db.session() as session:
        stored = await session.scalar(
            select(User.hashed_password).where(User.email == "old-timer@example.com")
        )
    assert stored is not None
    assert stored.startswith("$argon2id$")
    r = await service.client.post(
        "/api/auth/jwt/login", data={"username": "old-timer@example.com", "password": "wrong-but-long-1"}
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_credentials"


async def test_a_deactivated_account_is_refused_at_once_by_a_write(service: Service) -> None:
    """Reads may trust what the process read of the account for a few seconds; writes never do."""
    from sqlalchemy import update

    from mlservice.users.tables import User

    headers = await service.user("soon-gone@example.com")
    assert (await service.client.get("/api/users/me", headers=headers)).status_code == 200
    # Deactivated by another process: this one's cache is not told.
    async with service.db.session(write=True) as session:
        await session.execute(
            update(User).where(User.email == "soon-gone@example.com").values(is_active=False)
        )
    r = await service.client.post("/api/wallet/refill", json={"amount": 5}, headers=headers)
    assert r.status_code == 401
    r = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=headers)
    assert r.status_code == 401
