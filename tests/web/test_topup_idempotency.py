"""The web top-up form is idempotent: each rendered form carries a fresh key, a double submit of it
tops up once and is answered like the first, and the key is the one ``POST /api/wallet/refill`` and
the ``top_up`` use case (which the bot calls too) know."""

from __future__ import annotations

import asyncio
import html
import re
import uuid

import httpx
import pytest

from mlservice.idempotency.service import IdempotencyKeyReused
from mlservice.wallet import usecases
from tests.conftest import Service
from tests.fixtures.api import wallet
from tests.fixtures.web import browser, csrf

KEY = re.compile(r'name="idempotency_key" value="([0-9a-f]{32})"')


async def signed_up(service: Service) -> tuple[str, dict[str, str]]:
    email = f"topup-{uuid.uuid4().hex[:10]}@example.com"
    return email, await service.user(email)


async def form_key(client: httpx.AsyncClient) -> str:
    found = KEY.search((await client.get("/wallet")).text)
    assert found is not None, "the top-up form has no idempotency key"
    return found[1]


async def top_ups(service: Service, headers: dict[str, str]) -> list[int]:
    r = await service.client.get("/api/wallet/transactions?limit=200", headers=headers)
    return [e["amount"] for e in r.json()["items"] if e["type"] == "topup"]


async def test_each_rendered_form_has_a_fresh_key(service: Service) -> None:
    email, _ = await signed_up(service)
    async with browser(service, email) as client:
        assert await form_key(client) != await form_key(client)


async def test_a_double_submit_of_the_form_tops_up_once(service: Service) -> None:
    email, headers = await signed_up(service)
    bonus = service.settings.signup_bonus
    async with browser(service, email) as client:
        form = {"amount": "30", "idempotency_key": await form_key(client), "csrf_token": csrf(client)}
        first = await client.post("/wallet/top-up", data=form)
        assert (first.status_code, first.headers["location"]) == (303, "/wallet")
        assert "Added 30 credits to your wallet." in html.unescape((await client.get("/wallet")).text)

        again = await client.post("/wallet/top-up", data=form)
        # Answered like the first (the same redirect), with a notice that nothing was paid twice.
        assert (again.status_code, again.headers["location"]) == (303, "/wallet")
        page = html.unescape((await client.get("/wallet")).text)
        assert "This top-up was already made; it was not charged twice." in page

        # The same key for another amount is another request: refused, nothing paid.
        other = await client.post("/wallet/top-up", data={**form, "amount": "31"})
        assert other.status_code == 422
        assert other.headers["content-type"].startswith("text/html")

    assert await top_ups(service, headers) == [30]
    assert (await wallet(service, headers))["balance"] == bonus + 30


async def test_a_concurrent_double_submit_tops_up_once(service: Service) -> None:
    email, headers = await signed_up(service)
    async with browser(service, email) as client:
        form = {"amount": "12", "idempotency_key": await form_key(client), "csrf_token": csrf(client)}
        answers = await asyncio.gather(*(client.post("/wallet/top-up", data=form) for _ in range(2)))
    assert [(r.status_code, r.headers["location"]) for r in answers] == [(303, "/wallet")] * 2
    assert await top_ups(service, headers) == [12]


async def test_a_form_key_is_the_apis_key_and_the_use_cases(service: Service) -> None:
    email, headers = await signed_up(service)
    async with browser(service, email) as client:
        key = await form_key(client)
        r = await client.post(
            "/wallet/top-up", data={"amount": "7", "idempotency_key": key, "csrf_token": csrf(client)}
        )
        assert r.status_code == 303
    # The API answers a retry with that key as a replay of the form's top-up.
    api = await service.client.post(
        "/api/wallet/refill", json={"amount": 7}, headers={**headers, "Idempotency-Key": key}
    )
    assert (api.status_code, api.headers.get("Idempotent-Replayed")) == (200, "true")
    assert api.json()["entry"]["amount"] == 7

    # The use case itself: the replay carries the first answer's body.
    components = service.app.state.components
    me = (await service.client.get("/api/users/me", headers=headers)).json()["id"]
    outcome = await usecases.top_up(components, uuid.UUID(me), 7, key)
    assert (outcome.status_code, outcome.replayed, outcome.body) == (200, True, api.json())
    with pytest.raises(IdempotencyKeyReused):
        await usecases.top_up(components, uuid.UUID(me), 8, key)
    assert await top_ups(service, headers) == [7]
