"""Access tokens: HS256 only, with an expiry, a subject and our audience; on bearer and cookie alike."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from pydantic import ValidationError

from mlservice.security.tokens import AUDIENCE, AccessTokens
from mlservice.settings import Settings
from mlservice.users import service as accounts
from mlservice.users.transports import COOKIE_NAME
from tests.conftest import PASSWORD, Service


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any]) -> str:
    """A token with ``alg: none``: header and claims, and an empty signature."""
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}."


def tampered(token: str) -> str:
    header, claims, signature = token.split(".")
    flipped = "A" if signature[0] != "A" else "B"
    return f"{header}.{claims}.{flipped}{signature[1:]}"


def other_subject(token: str, subject: str) -> str:
    """The claims rewritten to another user, the original signature kept."""
    header, claims, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    return f"{header}.{b64(json.dumps({**data, 'sub': subject}).encode())}.{signature}"


def forge(secret: str, subject: str, extra: dict[str, Any], **changes: Any) -> str:
    algorithm = changes.pop("alg", "HS256")
    claims: dict[str, Any] = {"sub": subject, "aud": AUDIENCE, "exp": int(time.time()) + 600, **extra}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, secret, algorithm=algorithm)


async def me(service: Service, token: str, transport: str) -> int:
    service.client.cookies.clear()
    if transport == "bearer":
        r = await service.client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    else:
        r = await service.client.get("/api/users/me", headers={"Cookie": f"{COOKIE_NAME}={token}"})
    if r.status_code == 401:
        assert r.json()["error"]["code"] == "not_authenticated"
    return r.status_code


# (secret, user id, a real token, the claims a token of this transport carries besides: a cookie's
# session id) -> a token that must be refused
Forger = Callable[[str, str, str, dict[str, Any]], str]
BAD_TOKENS: dict[str, Forger] = {
    "tampered signature": lambda secret, sub, real, x: tampered(real),
    "claims of another user": lambda secret, sub, real, x: other_subject(real, str(uuid.uuid4())),
    "expired": lambda secret, sub, real, x: forge(secret, sub, x, exp=int(time.time()) - 5),
    "alg none": lambda secret, sub, real, x: unsigned(
        {"sub": sub, "aud": AUDIENCE, "exp": time.time() + 600, **x}
    ),
    "HS512 with the same secret": lambda secret, sub, real, x: forge(secret, sub, x, alg="HS512"),
    "HS384 with the same secret": lambda secret, sub, real, x: forge(secret, sub, x, alg="HS384"),
    "no exp": lambda secret, sub, real, x: forge(secret, sub, x, exp=None),
    "wrong audience": lambda secret, sub, real, x: forge(secret, sub, x, aud=["someone-else"]),
    "no audience": lambda secret, sub, real, x: forge(secret, sub, x, aud=None),
    "no subject": lambda secret, sub, real, x: forge(secret, sub, x, sub=None),
    "subject not an id": lambda secret, sub, real, x: forge(secret, sub, x, sub="admin"),
    "unknown user": lambda secret, sub, real, x: forge(secret, str(uuid.uuid4()), x),
    "another secret": lambda secret, sub, real, x: forge("another-secret-" + "y" * 40, sub, x),
    "session not ours": lambda secret, sub, real, x: forge(secret, sub, {"sid": str(uuid.uuid4())}),
    "session id not an id": lambda secret, sub, real, x: forge(secret, sub, {"sid": "1"}),
}


# PyJWT warns that our 52-character test secret is short for HS512: the forgery uses it on purpose.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("transport", ["bearer", "cookie"])
async def test_only_sound_tokens_authenticate(service: Service, transport: str) -> None:
    headers = await service.user("tokens@example.com")
    real = headers["Authorization"].removeprefix("Bearer ")
    user_id = (await service.client.get("/api/users/me", headers=headers)).json()["id"]
    secret = service.settings.jwt_secret_value()
    extra: dict[str, Any] = {}
    bad = dict(BAD_TOKENS)
    if transport == "cookie":
        # A cookie is a browser session's token: it names a session the server started.
        r = await service.client.post(
            "/api/auth/cookie/login", data={"username": "tokens@example.com", "password": PASSWORD}
        )
        real = r.cookies[COOKIE_NAME]
        extra = {"sid": jwt.decode(real, options={"verify_signature": False})["sid"]}
        bad["no session"] = lambda secret, sub, real, x: forge(secret, sub, {})

    # The control: what the service issues, and a well-formed token we make the same way, pass.
    assert await me(service, real, transport) == 200
    assert await me(service, forge(secret, user_id, extra), transport) == 200
    refused = {
        name: status
        for name, make in bad.items()
        if (status := await me(service, make(secret, user_id, real, extra), transport)) != 401
    }
    assert refused == {}


async def test_issued_tokens_are_hs256_with_an_expiry(service: Service) -> None:
    headers = await service.user()
    token = headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, service.settings.jwt_secret_value(), algorithms=["HS256"], audience=AUDIENCE)
    lifetime = claims["exp"] - time.time()
    assert service.settings.jwt_lifetime_seconds - 60 < lifetime <= service.settings.jwt_lifetime_seconds


async def test_cookie_login_issues_the_same_strict_token(service: Service) -> None:
    await service.user("cookie-jar@example.com")
    r = await service.client.post(
        "/api/auth/cookie/login", data={"username": "cookie-jar@example.com", "password": PASSWORD}
    )
    assert r.status_code == 204
    token = r.cookies[COOKIE_NAME]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert "exp" in jwt.decode(token, options={"verify_signature": False})


def test_strategy_refuses_weak_configuration() -> None:
    with pytest.raises(ValueError, match="32 characters"):
        AccessTokens(secret="short", lifetime_seconds=60)
    with pytest.raises(ValueError, match="lifetime"):
        AccessTokens(secret="s" * 40, lifetime_seconds=0)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, jwt_lifetime_seconds=0)  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="32 characters"):
        Settings(_env_file=None, jwt_secret="too-short").jwt_secret_value()  # type: ignore[call-arg]


async def test_logout_ends_the_cookie_session_on_the_server(service: Service) -> None:
    await service.user("leaving@example.com")
    r = await service.client.post(
        "/api/auth/cookie/login", data={"username": "leaving@example.com", "password": PASSWORD}
    )
    cookie = r.cookies[COOKIE_NAME]
    other = await service.client.post(
        "/api/auth/cookie/login", data={"username": "leaving@example.com", "password": PASSWORD}
    )
    second_browser = other.cookies[COOKIE_NAME]
    assert await me(service, cookie, "cookie") == 200
    # The session's token works as a bearer token too, while the session lives.
    assert await me(service, cookie, "bearer") == 200

    service.client.cookies.clear()
    r = await service.client.post("/api/auth/cookie/logout", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
    assert r.status_code == 204
    assert 'mlservice_auth=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
    # A copy of the cookie kept from before is refused now, however it is sent...
    assert await me(service, cookie, "cookie") == 401
    assert await me(service, cookie, "bearer") == 401
    # ...and another browser's session is its own.
    assert await me(service, second_browser, "cookie") == 200


async def test_sessions_end_in_other_processes_within_the_cache_time(service_factory: Any) -> None:
    """Another process (here: a second app on the same database) trusts what it read of a session
    for ``auth_cache_seconds`` at most; with 0 it reads it every time."""
    async with service_factory(auth_cache_seconds=0) as service:
        await service.user("twice@example.com")
        r = await service.client.post(
            "/api/auth/cookie/login", data={"username": "twice@example.com", "password": PASSWORD}
        )
        cookie = r.cookies[COOKIE_NAME]
        assert await me(service, cookie, "cookie") == 200
        claims = jwt.decode(cookie, options={"verify_signature": False})
        # Ended by another process: straight in the database, this process's cache not told.
        async with service.db.session(write=True) as session:
            await accounts.end_session(session, uuid.UUID(claims["sid"]))
        assert await me(service, cookie, "cookie") == 401
