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

from mlservice.security.tokens import AUDIENCE, StrictJWTStrategy
from mlservice.settings import Settings
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


def forge(secret: str, subject: str, **changes: Any) -> str:
    algorithm = changes.pop("alg", "HS256")
    claims: dict[str, Any] = {"sub": subject, "aud": AUDIENCE, "exp": int(time.time()) + 600}
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


BAD_TOKENS: dict[str, Callable[[str, str, str], str]] = {
    # (secret, user id, a real token from login) -> a token that must be refused
    "tampered signature": lambda secret, sub, real: tampered(real),
    "claims of another user": lambda secret, sub, real: other_subject(real, str(uuid.uuid4())),
    "expired": lambda secret, sub, real: forge(secret, sub, exp=int(time.time()) - 5),
    "alg none": lambda secret, sub, real: unsigned({"sub": sub, "aud": AUDIENCE, "exp": time.time() + 600}),
    "HS512 with the same secret": lambda secret, sub, real: forge(secret, sub, alg="HS512"),
    "HS384 with the same secret": lambda secret, sub, real: forge(secret, sub, alg="HS384"),
    "no exp": lambda secret, sub, real: forge(secret, sub, exp=None),
    "wrong audience": lambda secret, sub, real: forge(secret, sub, aud=["someone-else"]),
    "no audience": lambda secret, sub, real: forge(secret, sub, aud=None),
    "no subject": lambda secret, sub, real: forge(secret, sub, sub=None),
    "subject not an id": lambda secret, sub, real: forge(secret, sub, sub="admin"),
    "unknown user": lambda secret, sub, real: forge(secret, str(uuid.uuid4())),
    "another secret": lambda secret, sub, real: forge("another-secret-" + "y" * 40, sub),
}


# PyJWT warns that our 52-character test secret is short for HS512: the forgery uses it on purpose.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("transport", ["bearer", "cookie"])
async def test_only_sound_tokens_authenticate(service: Service, transport: str) -> None:
    headers = await service.user("tokens@example.com")
    real = headers["Authorization"].removeprefix("Bearer ")
    user_id = (await service.client.get("/api/users/me", headers=headers)).json()["id"]
    secret = service.settings.jwt_secret_value()

    # The control: what the service issues, and a well-formed token we make the same way, pass.
    assert await me(service, real, transport) == 200
    assert await me(service, forge(secret, user_id), transport) == 200
    refused = {
        name: status
        for name, make in BAD_TOKENS.items()
        if (status := await me(service, make(secret, user_id, real), transport)) != 401
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
        StrictJWTStrategy(secret="short", lifetime_seconds=60)
    with pytest.raises(ValueError, match="lifetime"):
        StrictJWTStrategy(secret="s" * 40, lifetime_seconds=0)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, jwt_lifetime_seconds=0)  # type: ignore[call-arg]
    with pytest.raises(RuntimeError, match="32 characters"):
        Settings(_env_file=None, jwt_secret="too-short").jwt_secret_value()  # type: ignore[call-arg]
