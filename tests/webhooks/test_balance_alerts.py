"""Low-balance alerts: thresholds (the defaults, or the user's own), once per crossing, re-armed by
credits coming in; a signed ``balance.low`` event to the account webhook, a message for each
linked chat."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import select

from mlservice.chats.tables import ChatMessage, TelegramLink
from mlservice.wallet.tables import Wallet
from mlservice.webhooks.tables import WebhookDelivery
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import submit, wallet
from tests.webhooks.conftest import FAST, Receiver, secret_of, verify


async def alerts(service: Service, headers: dict[str, str]) -> dict[str, Any]:
    r = await service.client.get("/api/wallet/alerts", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def configure(service: Service, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await service.client.put("/api/wallet/alerts", json=body, headers=headers)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def set_price(service: Service, admin: dict[str, str], slug: str, price: int) -> None:
    r = await service.client.patch(f"/api/admin/models/{slug}", json={"price": price}, headers=admin)
    assert r.status_code == 200, r.text


async def user_id(service: Service, headers: dict[str, str]) -> uuid.UUID:
    return uuid.UUID((await service.client.get("/api/users/me", headers=headers)).json()["id"])


async def take(service: Service, admin: dict[str, str], user: uuid.UUID, amount: int) -> None:
    r = await service.client.post(
        f"/api/admin/users/{user}/adjustments", json={"amount": -amount, "note": "test"}, headers=admin
    )
    assert r.status_code == 200, r.text


async def run_echo(service: Service, headers: dict[str, str]) -> None:
    r = await submit(service, headers)
    assert r.status_code == 201, r.text
    assert (await wait_for_job(service.client, headers, r.json()["id"]))["status"] == "succeeded"


async def account_deliveries(service: Service, user: uuid.UUID) -> list[WebhookDelivery]:
    async with service.db.session() as session:
        rows = await session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.user_id == user, WebhookDelivery.job_id.is_(None))
            .order_by(WebhookDelivery.id)
        )
        return list(rows)


async def test_the_defaults_alert_once_per_crossing_and_credits_re_arm_them(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(**FAST) as service:
        admin, headers = await service.admin(), await service.user()
        await set_price(service, admin, "test-echo", 10)
        await set_price(service, admin, "image-classification", 40)
        user = await user_id(service, headers)
        hook = receiver.url("/ok/account")
        assert (await configure(service, headers, webhook_url=hook))["effective"] == [10]
        r = await service.client.post("/api/wallet/refill", json={"amount": 200}, headers=headers)
        assert r.status_code == 200, r.text
        # The cheapest model's price and 10 % of the last top-up.
        assert (await alerts(service, headers))["effective"] == [20, 10]
        await take(service, admin, user, 300 - 25)  # money out, still above both: nothing
        assert (await alerts(service, headers))["recent"] == []

        await run_echo(service, headers)  # 15 left: below 20
        await run_echo(service, headers)  # 5 left: below 10 too
        state = await alerts(service, headers)
        assert [(a["threshold"], a["available"]) for a in state["recent"]] == [(10, 5), (20, 15)]
        assert state["below"] == [20, 10]
        await receiver.wait_for(lambda: len(receiver.at("/ok/account")) == 2)
        first, second = receiver.at("/ok/account")
        assert first.event == second.event == "balance.low"
        secret = await secret_of(service, headers)
        for got in (first, second):
            verify(secret, got.headers, got.body)
        assert first.json["type"] == "balance.low"
        assert first.json["data"] | {"user_id": None} == {
            "user_id": None,
            "available": 15,
            "balance": 15,
            "held": 0,
            "threshold": 20,
            "thresholds_crossed": [20],
        }
        assert first.json["data"]["user_id"] == str(user)
        assert second.json["data"]["thresholds_crossed"] == [20, 10]
        for _ in range(100):  # the deliverer records the answer right after the receiver got it
            if [d.status for d in await account_deliveries(service, user)] == ["delivered"] * 2:
                break
            await asyncio.sleep(0.05)
        assert [d.status for d in await account_deliveries(service, user)] == ["delivered"] * 2
        listed = (await alerts(service, headers))["deliveries"]
        assert [(d["event"], d["status"], d["url"]) for d in listed] == [
            ("balance.low", "delivered", hook)
        ] * 2
        assert listed[0]["id"] > listed[1]["id"]  # newest first

        # Money in lifts the credits above 10 again: re-armed, and nothing is sent for it.
        r = await service.client.post("/api/wallet/refill", json={"amount": 10}, headers=headers)
        assert r.status_code == 200, r.text
        state = await alerts(service, headers)
        assert state["effective"] == [10, 1]
        assert state["below"] == []
        assert len(state["recent"]) == 2
        await run_echo(service, headers)  # 5 left: below 10 once more
        state = await alerts(service, headers)
        assert [(a["threshold"], a["available"]) for a in state["recent"][:1]] == [(10, 5)]
        assert len(state["recent"]) == 3
        assert len(await account_deliveries(service, user)) == 3


async def test_own_thresholds_and_what_is_refused(service: Service) -> None:
    headers = await service.user()
    assert (await alerts(service, headers))["thresholds"] is None
    body = await configure(service, headers, thresholds=[50, 80, 50], telegram=False)
    assert body["thresholds"] == body["effective"] == [80, 50]
    assert body["below"] == []
    assert body["telegram"] is False
    assert body["webhook_url"] is None
    # Set above what is available now: counted as crossed already, nothing is sent.
    body = await configure(service, headers, thresholds=[150])
    assert body["below"] == [150]
    assert body["recent"] == []
    assert (await configure(service, headers, thresholds=[]))["effective"] == []

    for bad, code in (
        ({"thresholds": [0]}, "validation_error"),
        ({"thresholds": [1, 2, 3, 4, 5, 6]}, "validation_error"),
        ({"thresholds": [1], "extra": 1}, "validation_error"),
        ({"webhook_url": "ftp://example.com/x"}, "invalid_webhook"),
        ({"webhook_url": "http://127.0.0.1/hook"}, "invalid_webhook"),  # private: refused here
    ):
        r = await service.client.put("/api/wallet/alerts", json=bad, headers=headers)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == code, r.text
    assert (await alerts(service, headers))["effective"] == []
    assert (await service.client.get("/api/wallet/alerts")).status_code == 401
    assert (await service.client.put("/api/wallet/alerts", json={})).status_code == 401


async def test_voiding_a_grant_crosses_and_a_linked_chat_gets_a_message(service: Service) -> None:
    admin, headers = await service.admin(), await service.user()
    user = await user_id(service, headers)
    async with service.db.session(write=True) as session:
        session.add(TelegramLink(chat_id=4242, user_id=user))
    r = await service.client.post(
        "/api/admin/grants", json={"user_id": str(user), "amount": 100, "note": "gift"}, headers=admin
    )
    assert r.status_code == 201, r.text
    grant = r.json()["grants"][0]["id"]
    await configure(service, headers, thresholds=[150])  # 200 available: above
    r = await service.client.post(f"/api/admin/grants/{grant}/void", headers=admin)
    assert r.status_code == 200, r.text

    state = await alerts(service, headers)
    assert [(a["threshold"], a["available"]) for a in state["recent"]] == [(150, 100)]
    async with service.db.session() as session:
        messages = list(await session.scalars(select(ChatMessage).where(ChatMessage.user_id == user)))
    assert [(m.chat_id, m.status) for m in messages] == [(4242, "pending")]
    assert "100 available, below 150" in messages[0].text
    # No webhook was set: nothing to deliver.
    assert await account_deliveries(service, user) == []

    # Telegram off: the next crossing is recorded, no message.
    await configure(service, headers, thresholds=[150, 90], telegram=False)
    await take(service, admin, user, 20)
    state = await alerts(service, headers)
    assert [a["threshold"] for a in state["recent"]] == [90, 150]
    async with service.db.session() as session:
        assert len(list(await session.scalars(select(ChatMessage)))) == 1


async def next_threshold(service: Service, user: uuid.UUID) -> int | None:
    """The wallet's ``low_balance_below``: the level below which its next charge is looked at."""
    async with service.db.session() as session:
        return await session.scalar(select(Wallet.low_balance_below).where(Wallet.user_id == user))


async def test_a_price_change_makes_the_next_threshold_unknown(service: Service) -> None:
    admin, headers = await service.admin(), await service.user()
    user = await user_id(service, headers)
    await configure(service, headers)  # reviews the wallet: its next threshold is known
    before = await next_threshold(service, user)
    assert before is not None
    await set_price(service, admin, "image-classification", 40)
    await set_price(service, admin, "test-echo", 7)
    after = await next_threshold(service, user)
    assert after is None
    await run_echo(service, headers)  # the charge looks again and sets it
    again = await next_threshold(service, user)
    assert again == 7
    assert (await wallet(service, headers))["available"] == 93
