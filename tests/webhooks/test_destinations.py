"""Where webhooks may go, how they are signed and when they are retried (no database needed)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import pytest

from mlservice.webhooks.deliverer import RetryPolicy, classify
from mlservice.webhooks.destinations import (
    DestinationRefused,
    InvalidWebhook,
    check_url,
    resolve_destination,
)
from mlservice.webhooks.signing import new_secret, signature


def resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


def test_private_destinations_are_allowed_only_when_configured() -> None:
    for url in (
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://10.0.0.1/",
        "http://[::1]:81/",
    ):
        with pytest.raises(InvalidWebhook):
            check_url(url, allow_private=False)
        assert check_url(url, allow_private=True) == url
    # Credentials, other schemes and relative URLs are refused whatever the setting.
    for url in ("http://a:b@127.0.0.1/", "file:///etc/passwd", "//example.com/hook", "javascript:alert(1)"):
        with pytest.raises(InvalidWebhook):
            check_url(url, allow_private=True)
    assert check_url("  https://hooks.example.com/x?y=1  ", allow_private=False) == (
        "https://hooks.example.com/x?y=1"
    )


async def test_every_resolved_address_must_be_public() -> None:
    public = await resolve_destination(
        "hooks.example.com", 443, allow_private=False, resolver=resolving_to("93.184.215.14")
    )
    assert public == "93.184.215.14"
    for answer in (
        ("127.0.0.1",),
        ("93.184.215.14", "10.0.0.7"),  # one private record is enough to refuse
        ("169.254.169.254",),
        ("::ffff:127.0.0.1",),
        ("fe80::1%eth0",),
        ("100.64.1.1",),
    ):
        with pytest.raises(DestinationRefused):
            await resolve_destination(
                "hooks.example.com", 443, allow_private=False, resolver=resolving_to(*answer)
            )
    assert (
        await resolve_destination(
            "hooks.example.com", 80, allow_private=True, resolver=resolving_to("10.0.0.7")
        )
        == "10.0.0.7"
    )
    with pytest.raises(OSError, match="no address"):
        await resolve_destination("hooks.example.com", 80, allow_private=True, resolver=resolving_to())
    # An address in the URL is checked as it is, without a lookup.
    with pytest.raises(DestinationRefused):
        await resolve_destination("192.168.1.1", 80, allow_private=False, resolver=resolving_to("1.1.1.1"))


def test_signature_is_standard_webhooks_hmac() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert len(key) == 32
    body = b'{"id":"x","status":"succeeded"}'
    expected = base64.b64encode(hmac.new(key, b"42.1700000000." + body, hashlib.sha256).digest()).decode()
    assert signature(secret, "42", 1700000000, body) == f"v1,{expected}"


def test_retry_schedule_with_jitter_and_a_last_attempt() -> None:
    policy = RetryPolicy(max_attempts=4, delays=(5, 30))
    delays = [policy.next_delay(attempts) for attempts in (1, 2, 3)]
    for delay, base in zip(delays, (5, 30, 30), strict=True):
        assert delay is not None
        assert base * 0.8 <= delay <= base * 1.2
    assert policy.next_delay(4) is None


def test_which_answers_are_retried() -> None:
    def answer(status: int, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers=headers)

    assert classify(answer(204)).delivered
    for status in (408, 429, 500, 502, 503):
        assert classify(answer(status)).retryable, status
    for status in (301, 307, 400, 401, 404, 410, 422):
        result = classify(answer(status))
        assert not result.retryable, status
        assert not result.delivered
    assert classify(answer(429, **{"retry-after": "120"})).retry_after == 120
    assert classify(answer(503, **{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})).retry_after is None
