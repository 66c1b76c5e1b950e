"""Single sign-on through a real OpenID provider (oidc-provider on loopback): accounts made and
linked at the first login, roles from a group, and every refused answer a page that says why and
leaves nothing behind. The browser's side is played by httpx clients with cookies of their own
(tests/web/test_browser_oidc.py drives the same through Chromium)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from joserfc.jwk import RSAKey
from sqlalchemy import func, select, update

from mlservice.users.tables import OidcLink, User
from tests.conftest import PASSWORD, Service
from tests.fixtures.live_server import free_port
from tests.fixtures.oidc_provider import CLIENT_ID, OpenIdProvider, provider_login, running_provider
from tests.fixtures.web import browser, csrf

BACK = "http://testserver/auth/oidc/test/callback"
SECOND_BACK = "http://testserver/auth/oidc/second/callback"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenIdProvider]:
    with running_provider(
        tmp_path_factory.mktemp("oidc-provider"), [BACK, SECOND_BACK], ["http://testserver/login"]
    ) as running:
        yield running


@pytest.fixture
async def sso(service_factory: Callable[..., Any], provider: OpenIdProvider) -> AsyncIterator[Service]:
    async with service_factory(oidc_providers=[provider.settings()]) as svc:
        yield svc


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


async def test_login_and_register_pages_offer_the_provider(sso: Service) -> None:
    for path in ("/login", "/register"):
        r = await sso.client.get(path)
        assert 'href="/auth/oidc/test/login"' in r.text
        assert "Log in with Test ID" in r.text
        assert 'type="password"' in r.text
    r = await sso.client.get("/login?next=/wallet")
    assert 'href="/auth/oidc/test/login?next=/wallet"' in r.text


async def test_first_login_creates_the_account_with_the_signup_bonus(
    sso: Service, provider: OpenIdProvider
) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        r = await client.get("/auth/oidc/test/login?next=/wallet")
        back = await provider_login(r.headers["location"], login, BACK)
        r = await client.get(back)
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/wallet"
        account = await me(client)
        assert account["email"] == f"{login}@example.com"
        assert account["role"] == "user"
        wallet = (await client.get("/api/wallet")).json()
        assert wallet["balance"] == sso.settings.signup_bonus
        entries = (await client.get("/api/wallet/transactions")).json()
        assert [e["amount"] for e in entries["items"]] == [sso.settings.signup_bonus]
    # The account has no password that works.
    r = await sso.client.post("/api/auth/jwt/login", data={"username": account["email"], "password": "!"})
    assert r.status_code == 400


async def test_a_verified_email_links_the_existing_account(sso: Service, provider: OpenIdProvider) -> None:
    login = login_name()
    email = f"{login}@example.com"
    await sso.user(email)
    before = await counts(sso)
    provider.account(login, email=email, email_verified=True)
    async with browser(sso) as client:
        assert (await sso_login(client, login)).status_code == 303
        assert (await me(client))["email"] == email
        wallet = (await client.get("/api/wallet")).json()
        assert wallet["balance"] == sso.settings.signup_bonus  # no second bonus
    assert await counts(sso) == (before[0], before[1] + 1)
    await sso.login(email, PASSWORD)  # the password still works


async def test_an_email_change_at_the_provider_keeps_the_account(
    sso: Service, provider: OpenIdProvider
) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        await sso_login(client, login)
        first = await me(client)
    provider.account(login, email=f"{login}.renamed@example.com")
    before = await counts(sso)
    async with browser(sso) as client:
        assert (await sso_login(client, login)).status_code == 303
        assert (await me(client))["id"] == first["id"]
    assert await counts(sso) == before


async def test_the_admin_group_grants_the_role_and_its_removal_takes_it(
    sso: Service, provider: OpenIdProvider
) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com", groups=["staff", "mlservice-admins"])
    async with browser(sso) as client:
        await sso_login(client, login)
        assert (await me(client))["role"] == "admin"
        assert (await client.get("/api/admin/users")).status_code == 200
    provider.account(login, email=f"{login}@example.com", groups=["staff"])
    async with browser(sso) as client:
        await sso_login(client, login)
        assert (await me(client))["role"] == "user"
        assert (await client.get("/api/admin/users")).status_code == 403


async def test_a_deactivated_account_cannot_log_in_through_the_provider(
    sso: Service, provider: OpenIdProvider
) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        await sso_login(client, login)
        user_id = uuid.UUID((await me(client))["id"])
    async with sso.db.session(write=True) as session:
        await session.execute(update(User).where(User.id == user_id).values(is_active=False))
    async with browser(sso) as client:
        refused(await sso_login(client, login), 403, "account_inactive")
        assert (await client.get("/api/users/me")).status_code == 401


async def test_logout_ends_the_session_and_goes_to_the_provider(
    sso: Service, provider: OpenIdProvider
) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        await sso_login(client, login)
        session_cookie = client.cookies.get("mlservice_session")
        await client.get("/")
        r = await client.post("/logout", data={"csrf_token": csrf(client)})
        assert r.status_code == 303
        target = urlsplit(r.headers["location"])
        assert f"{target.scheme}://{target.netloc}{target.path}" == f"{provider.issuer}/session/end"
        query = parse_qs(target.query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["post_logout_redirect_uri"] == ["http://testserver/login"]
    # The copied cookie no longer works.
    async with browser(sso) as copy:
        copy.cookies.set("mlservice_session", session_cookie or "")
        assert (await copy.get("/api/users/me")).status_code == 401
    # A password session logs out to our own login page, as before.
    email = f"{login_name()}@example.com"
    await sso.user(email)
    async with browser(sso, email) as client:
        await client.get("/")
        r = await client.post("/logout", data={"csrf_token": csrf(client)})
        assert r.headers["location"] == "/login"


async def test_logout_without_an_end_session_page_stays_here(sso: Service, provider: OpenIdProvider) -> None:
    class NoEndSession(TokenRewriter):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await super().handle_async_request(request)
            if request.url.path != "/.well-known/openid-configuration":
                return response
            metadata = json.loads(await response.aread())
            metadata.pop("end_session_endpoint")
            return httpx.Response(200, json=metadata)

    sso.app.state.components.oidc.http.transport = NoEndSession()
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        await sso_login(client, login)
        await client.get("/")
        r = await client.post("/logout", data={"csrf_token": csrf(client)})
        assert r.headers["location"] == "/login"
        assert (await client.get("/api/users/me")).status_code == 401


async def test_two_providers_each_with_its_button_and_links(
    service_factory: Callable[..., Any], provider: OpenIdProvider
) -> None:
    second = provider.settings(name="second", display_name="Second ID")
    async with service_factory(oidc_providers=[provider.settings(), second]) as svc:
        r = await svc.client.get("/login")
        assert "Log in with Test ID" in r.text
        assert "Log in with Second ID" in r.text
        login = login_name()
        provider.account(login, email=f"{login}@example.com")
        async with browser(svc) as client:
            await sso_login(client, login)
            first = await me(client)
        # The same address, verified, through the other provider: the same account, linked twice.
        async with browser(svc) as client:
            r = await client.get("/auth/oidc/second/login")
            back = await provider_login(r.headers["location"], login, SECOND_BACK)
            assert (await client.get(back)).status_code == 303
            assert (await me(client))["id"] == first["id"]
        assert await counts(svc) == (1, 2)
        # A state started for one provider is no answer for the other.
        async with browser(svc) as client:
            url = await start(client)
            state = parse_qs(urlsplit(url).query)["state"][0]
            client.cookies.set("mlservice_oidc_state", state, path="/auth/oidc/second/")
            refused(await client.get(f"{SECOND_BACK}?code=x&state={state}"), 400, "oidc_state_invalid")


async def test_password_login_can_be_turned_off(
    service_factory: Callable[..., Any], provider: OpenIdProvider
) -> None:
    async with service_factory(oidc_providers=[provider.settings()], password_login=False) as svc:
        r = await svc.client.get("/login")
        assert "Log in with Test ID" in r.text
        assert 'type="password"' not in r.text
        r = await svc.client.post("/login", data={"username": "a@example.com", "password": PASSWORD})
        assert r.status_code in (400, 403)
        async with browser(svc) as client:
            await client.get("/login")
            form = {"username": "a@example.com", "password": PASSWORD, "csrf_token": csrf(client)}
            r = await client.post("/login", data=form)
            assert r.status_code == 403
            assert "Passwords are turned off" in r.text
        r = await svc.client.post("/api/auth/jwt/login", data={"username": "a@example.com", "password": "x"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "password_login_disabled"
        r = await svc.client.post("/api/auth/register", json={"email": "b@example.com", "password": PASSWORD})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "password_login_disabled"
        login = login_name()
        provider.account(login, email=f"{login}@example.com")
        async with browser(svc) as client:
            assert (await sso_login(client, login)).status_code == 303
            assert (await me(client))["email"] == f"{login}@example.com"


# -- bad input: a clear page, nothing created -------------------------------------------------------


async def test_a_wrong_state_is_refused(sso: Service, provider: OpenIdProvider) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    before = await counts(sso)
    async with browser(sso) as client:
        back = await answer(client, login)
        code = parse_qs(urlsplit(back).query)["code"][0]
        refused(await client.get(f"{BACK}?code={code}&state=not-the-state"), 400, "oidc_state_invalid")
    # The right answer carried to another browser (login CSRF): its cookie has no such state.
    async with browser(sso) as client:
        refused(await client.get(back), 400, "oidc_state_invalid")
    assert await counts(sso) == before


async def test_a_replayed_state_is_refused(sso: Service, provider: OpenIdProvider) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        back = await answer(client, login)
        assert (await client.get(back)).status_code == 303
        client.cookies.delete("mlservice_session")
        # The state cookie is gone after use; put it back as an attacker replaying would.
        state = parse_qs(urlsplit(back).query)["state"][0]
        client.cookies.set("mlservice_oidc_state", state, path="/auth/oidc/test/")
        refused(await client.get(back), 400, "oidc_state_invalid")


async def test_a_reused_code_is_refused(sso: Service, provider: OpenIdProvider) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        back = await answer(client, login)
        assert (await client.get(back)).status_code == 303
        used_code = parse_qs(urlsplit(back).query)["code"][0]
    before = await counts(sso)
    async with browser(sso) as client:
        state = parse_qs(urlsplit(await start(client)).query)["state"][0]
        refused(await client.get(f"{BACK}?code={used_code}&state={state}"), 400, "oidc_code_rejected")
    assert await counts(sso) == before


async def test_an_answer_from_another_issuer_is_refused(sso: Service, provider: OpenIdProvider) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        back = await answer(client, login)
        assert parse_qs(urlsplit(back).query)["iss"] == [provider.issuer]  # RFC 9207
        mixed_up = back.replace(quote(provider.issuer, safe=""), quote("https://evil.example", safe=""))
        refused(await client.get(mixed_up), 400, "oidc_issuer_mismatch")


async def test_an_error_from_the_provider_is_shown(sso: Service) -> None:
    async with browser(sso) as client:
        state = parse_qs(urlsplit(await start(client)).query)["state"][0]
        r = await client.get(f"{BACK}?error=access_denied&state={state}")
        refused(r, 400, "oidc_login_denied")


async def test_an_unverified_email_of_an_existing_account_is_refused(
    sso: Service, provider: OpenIdProvider
) -> None:
    login = login_name()
    email = f"{login}@example.com"
    await sso.user(email)
    provider.account(login, email=email, email_verified=False)
    before = await counts(sso)
    async with browser(sso) as client:
        r = await sso_login(client, login)
        refused(r, 400, "oidc_email_unverified")
        assert "not verified" in r.text
    assert await counts(sso) == before


async def test_an_unverified_or_missing_email_creates_no_account(
    sso: Service, provider: OpenIdProvider
) -> None:
    unverified, without = login_name(), login_name()
    provider.account(unverified, email=f"{unverified}@example.com", email_verified=False)
    provider.account(without)
    before = await counts(sso)
    async with browser(sso) as client:
        refused(await sso_login(client, unverified), 400, "oidc_email_unverified")
    async with browser(sso) as client:
        refused(await sso_login(client, without), 400, "oidc_email_missing")
    assert await counts(sso) == before


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
    from joserfc import jwt

    return jwt.encode({"alg": "RS256", "kid": "stranger"}, unverified_claims(token), stranger)


@pytest.mark.parametrize(
    "case",
    ["tampered", "expired", "wrong_audience", "wrong_issuer", "wrong_nonce", "foreign_key", "not_a_jwt"],
)
async def test_a_bad_id_token_is_refused(sso: Service, provider: OpenIdProvider, case: str) -> None:
    now = int(time.time())
    rewrites: dict[str, Callable[[str], str]] = {
        "tampered": tampered,
        "expired": resigned(provider, iat=now - 7200, exp=now - 3600),
        "wrong_audience": resigned(provider, aud="another-client"),
        "wrong_issuer": resigned(provider, iss="http://127.0.0.1:1"),
        "wrong_nonce": resigned(provider, nonce="from-another-login"),
        "foreign_key": foreign_key,
        "not_a_jwt": lambda token: "not.a.token",
    }
    sso.app.state.components.oidc.http.transport = TokenRewriter(rewrite=rewrites[case])
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    before = await counts(sso)
    async with browser(sso) as client:
        refused(await sso_login(client, login), 400, "oidc_id_token_invalid")
    assert await counts(sso) == before


async def test_keys_rotated_at_the_provider_are_fetched_again(sso: Service, provider: OpenIdProvider) -> None:
    # What we read of its keys before it rotated them: a key it no longer signs with.
    old = RSAKey.generate_key(2048, parameters={"kid": "retired-key", "use": "sig", "alg": "RS256"})
    sso.app.state.components.oidc.http.transport = TokenRewriter(stale_keys={"keys": [old.as_dict()]})
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        assert (await sso_login(client, login)).status_code == 303
        assert (await me(client))["email"] == f"{login}@example.com"


async def test_a_provider_that_goes_down_during_the_login_gets_a_clear_page(
    sso: Service, provider: OpenIdProvider
) -> None:
    sso.app.state.components.oidc.http.transport = TokenRewriter(token_down=True)
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    before = await counts(sso)
    async with browser(sso) as client:
        refused(await sso_login(client, login), 502, "oidc_provider_unavailable")
    assert await counts(sso) == before


async def test_a_provider_that_is_down_gets_a_clear_page(
    service_factory: Callable[..., Any], provider: OpenIdProvider, tmp_path: Path
) -> None:
    down = {
        **provider.settings(name="down", display_name="Down ID"),
        "issuer": f"http://127.0.0.1:{free_port()}",
    }
    async with service_factory(oidc_providers=[down], oidc_timeout_seconds=2) as svc:
        r = await svc.client.get("/auth/oidc/down/login")
        refused(r, 502, "oidc_provider_unavailable")
        assert await counts(svc) == (0, 0)
        r = await svc.client.get("/login")
        assert r.status_code == 200
        assert 'type="password"' in r.text
        r = await svc.client.get("/auth/oidc/nowhere/login")
        assert r.status_code == 404


async def test_starting_logins_is_rate_limited_per_address(
    service_factory: Callable[..., Any], provider: OpenIdProvider
) -> None:
    # Each start keeps a row until it is answered: the password logins' per-address limit holds.
    async with service_factory(oidc_providers=[provider.settings()], rate_limit_login_ip="2/minute") as svc:
        for _ in range(2):
            assert (await svc.client.get("/auth/oidc/test/login")).status_code == 303
        r = await svc.client.get("/auth/oidc/test/login")
        assert r.status_code == 429
        assert "text/html" in r.headers["content-type"]
