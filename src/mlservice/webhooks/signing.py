"""Webhook signatures in the Standard Webhooks scheme.

A user's secret is 32 random bytes, shown as ``whsec_`` + base64. Each attempt is signed with
HMAC-SHA256 over ``f"{webhook-id}.{webhook-timestamp}.{body}"`` keyed with the decoded bytes, and
sent as ``webhook-signature: v1,<base64 of the MAC>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")
