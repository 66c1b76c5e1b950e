"""What the single sign-on tests share: the provider's test client as the app sees it, a login
played by httpx clients with cookies of their own, and a man in the middle that alters what the
provider sends (tests/web/test_oidc*.py)."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import func, select

from mlservice.users.tables import OidcLink, User
from tests.conftest import Service
from tests.fixtures.oidc_provider import OpenIdProvider, provider_login

BACK = "http://testserver/auth/oidc/test/callback"
SECOND_BACK = "http://testserver/auth/oidc/second/callback"


def login_name() -> str:
    return f"u{uuid.uuid4().hex[:10]}"


async def start(client: httpx.AsyncClient) -> str:
    """Click "Log in with Test ID": the provider's authorization URL."""
    r = await client.get("/auth/oidc/test/login")
    assert r.status_code == 303, r.text
    return r.headers["location"]


async def answer(client: httpx.AsyncClient, login: str) -> str:
    """Log in at the provider; the callback URL it sends the browser back to (not yet followed)."""
    return await provider_login(await start(client), login, BACK)


async def sso_login(client: httpx.AsyncClient, login: str) -> httpx.Response:
    return await client.get(await answer(client, login))


async def me(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/api/users/me")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def counts(svc: Service) -> tuple[int, int]:
    async with svc.db.session() as session:
        users = await session.scalar(select(func.count()).select_from(User))
        links = await session.scalar(select(func.count()).select_from(OidcLink))
    return int(users or 0), int(links or 0)


def refused(r: httpx.Response, status: int, code: str) -> None:
    """A clear error page, with the password login still offered, and no session."""
    assert r.status_code == status, r.text
    assert "text/html" in r.headers["content-type"]
    assert f"<code>{code}</code>" in r.text
    assert 'href="/login"' in r.text
    assert "Log in with your password" in r.text
    assert "mlservice_session" not in r.headers.get("set-cookie", "")


# -- logging in -------------------------------------------------------------------------------------


class TokenRewriter(httpx.AsyncBaseTransport):
    """Between our side and the provider: hands our side another ID token than the provider
    issued (``rewrite``), or an outdated copy of the provider's keys (``stale_keys``) once."""

    def __init__(
        self, rewrite: Callable[[str], str] | None = None, stale_keys: Any = None, token_down: bool = False
    ) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.rewrite = rewrite
        self.stale_keys = stale_keys
        self.token_down = token_down

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.token_down and request.url.path == "/token":
            raise httpx.ConnectError("connection refused", request=request)
        if self.stale_keys is not None and request.url.path == "/jwks":
            keys, self.stale_keys = self.stale_keys, None
            return httpx.Response(200, json=keys)
        response = await self.inner.handle_async_request(request)
        if self.rewrite is None or request.url.path != "/token" or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        body["id_token"] = self.rewrite(body["id_token"])
        return httpx.Response(200, json=body)


def unverified_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def resigned(provider: OpenIdProvider, **changes: Any) -> Callable[[str], str]:
    """The provider's ID token with ``changes``, signed again with the provider's own key."""
    return lambda token: provider.sign({**unverified_claims(token), **changes})


def tampered(token: str) -> str:
    """The same signature over other claims (a new e-mail)."""
    header, _, signature = token.split(".")
    claims = {**unverified_claims(token), "email": "admin@example.com"}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{payload}.{signature}"


def foreign_key(token: str) -> str:
    """A token signed with a key the provider never published."""
    stranger = RSAKey.generate_key(2048, parameters={"kid": "stranger"})
    return jwt.encode({"alg": "RS256", "kid": "stranger"}, unverified_claims(token), stranger)
