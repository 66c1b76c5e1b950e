"""Single sign-on: every answer that cannot sign anyone in gets a page that says why (a stable code,
the password login still offered) and creates nothing: a wrong, replayed or foreign state, a reused
code, another issuer, an error from the provider, an unverified or missing e-mail, a bad ID token
(tampered, expired, another audience, issuer or nonce, an unknown key), a provider that is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.conftest import Service
from tests.fixtures.live_server import free_port
from tests.fixtures.oidc_provider import OpenIdProvider
from tests.fixtures.web import browser
from tests.web.oidc_flow import (
    BACK,
    TokenRewriter,
    answer,
    counts,
    foreign_key,
    login_name,
    refused,
    resigned,
    sso_login,
    start,
    tampered,
)


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


async def test_a_login_answered_too_late_is_refused(
    service_factory: Callable[..., Any], provider: OpenIdProvider
) -> None:
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    async with service_factory(oidc_providers=[provider.settings()], oidc_login_seconds=1) as svc:
        before = await counts(svc)
        async with browser(svc) as client:
            back = await answer(client, login)
            await asyncio.sleep(1.2)
            # The state cookie has expired too; a browser that kept it is refused all the same.
            state = parse_qs(urlsplit(back).query)["state"][0]
            client.cookies.set("mlservice_oidc_state", state, path="/auth/oidc/test/")
            refused(await client.get(back), 400, "oidc_state_invalid")
        assert await counts(svc) == before


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


@pytest.mark.parametrize(
    "case",
    [
        "tampered",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "wrong_nonce",
        "foreign_key",
        "not_a_jwt",
        "subject_too_long",
    ],
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
        "subject_too_long": resigned(provider, sub="s" * 256),
    }
    sso.app.state.components.oidc.http.transport = TokenRewriter(rewrite=rewrites[case])
    login = login_name()
    provider.account(login, email=f"{login}@example.com")
    before = await counts(sso)
    async with browser(sso) as client:
        refused(await sso_login(client, login), 400, "oidc_id_token_invalid")
    assert await counts(sso) == before


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
