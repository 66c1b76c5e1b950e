"""/v1/webhooks/default/secret: the secret a /v1 prediction's webhooks are really signed with,
checked on deliveries to a real receiver, as Replicate's own client checks them."""

from __future__ import annotations

from typing import Any

from replicate.webhook import Webhooks, WebhookSigningSecret

from tests.conftest import Service
from tests.fixtures.predictors import EchoText
from tests.replicate.conftest import create
from tests.replicate.test_predictions import assert_problem
from tests.webhooks.conftest import FAST, Receiver, verify


async def default_secret(service: Service, headers: dict[str, str]) -> str:
    r = await service.client.get("/v1/webhooks/default/secret", headers=headers)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"key"}
    key: str = r.json()["key"]
    return key


async def test_deliveries_verify_with_the_default_secret(service_factory: Any, receiver: Receiver) -> None:
    async with service_factory(predictors=[EchoText], **FAST) as service:
        headers = await service.user()
        r = await create(service, headers, webhook=receiver.url("/ok"), prefer="wait")
        assert r.status_code == 201, r.text
        await receiver.wait_for(lambda: len(receiver.at("/ok")) == 2)
        key = await default_secret(service, headers)
        assert key.startswith("whsec_")
        for request in receiver.at("/ok"):
            assert request.json["id"] == r.json()["id"]
            verify(key, request.headers, request.body)
            # Replicate's client: raises unless the signature is right.
            Webhooks.validate(
                headers=request.headers,
                body=request.body.decode(),
                secret=WebhookSigningSecret(key=key),
                tolerance=300,
            )

        # One secret per account, the one /api shows and rotates.
        api = await service.client.get("/api/webhooks/secret", headers=headers)
        assert api.json()["secret"] == key
        other = await service.user()
        assert await default_secret(service, other) != key
        rotated = (await service.client.post("/api/webhooks/secret/rotate", headers=headers)).json()["secret"]
        assert await default_secret(service, headers) == rotated != key


async def test_the_secret_needs_a_token(service: Service) -> None:
    assert_problem(await service.client.get("/v1/webhooks/default/secret"), 401, "not_authenticated")
    r = await service.client.get("/v1/webhooks/default/secret", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert r.headers["Cache-Control"] == "no-store"
