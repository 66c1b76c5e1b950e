from __future__ import annotations

import pytest

from tests.conftest import PASSWORD, Service


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
    assert wallet == {"balance": 100, "held": 0, "available": 100}


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
