"""Single sign-on through a real OpenID provider (oidc-provider on loopback): accounts made and
linked at the first login, roles from a group, logout, several providers, passwords turned off,
keys rotated at the provider. The browser's side is played by httpx clients with cookies of their
own (tests/web/test_browser_oidc.py drives the same through Chromium; the refused logins are in
test_oidc_refusals.py)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from joserfc.jwk import RSAKey
from sqlalchemy import update

from mlservice.users.tables import User
from tests.conftest import PASSWORD, Service
from tests.fixtures.live_server import free_port
from tests.fixtures.oidc_provider import CLIENT_ID, OpenIdProvider, provider_login, running_provider
from tests.fixtures.web import browser, csrf
from tests.web.oidc_flow import (
    BACK,
    SECOND_BACK,
    TokenRewriter,
    counts,
    login_name,
    me,
    refused,
    sso_login,
    start,
)


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
        # The state also goes into a cookie of this browser, for the callback only.
        cookie = r.headers["set-cookie"].lower()
        assert cookie.startswith("mlservice_oidc_state=")
        for attribute in ("httponly", "samesite=lax", "path=/auth/oidc/test/", "max-age=600"):
            assert attribute in cookie
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


async def test_keys_rotated_at_the_provider_are_fetched_again(sso: Service, provider: OpenIdProvider) -> None:
    # What we read of its keys before it rotated them: a key it no longer signs with.
    old = RSAKey.generate_key(2048, parameters={"kid": "retired-key", "use": "sig", "alg": "RS256"})
    sso.app.state.components.oidc.http.transport = TokenRewriter(stale_keys={"keys": [old.as_dict()]})
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with browser(sso) as client:
        assert (await sso_login(client, login)).status_code == 303
        assert (await me(client))["email"] == f"{login}@example.com"


async def test_a_provider_that_rotated_its_keys_is_followed(
    service_factory: Callable[..., Any], provider: OpenIdProvider, tmp_path: Path
) -> None:
    port = free_port()
    back = "http://testserver/auth/oidc/rotating/callback"
    login = login_name()
    issuer = f"http://127.0.0.1:{port}"
    config = {**provider.settings(name="rotating"), "issuer": issuer}
    async with service_factory(oidc_providers=[config]) as svc:
        kids = []
        # The same provider twice on its port, with a new signing key (a new kid) the second
        # time: the keys read at the first login are out of date then, and are read again.
        for _ in range(2):
            with running_provider(tmp_path, [back], [], port=port) as running:
                kids.append(running.key.kid)
                running.account(login, email=f"{login}@example.com")
                async with browser(svc) as client:
                    r = await client.get("/auth/oidc/rotating/login")
                    r = await client.get(await provider_login(r.headers["location"], login, back))
                    assert r.status_code == 303, r.text
                    assert (await me(client))["email"] == f"{login}@example.com"
        assert kids[0] != kids[1]
