"""``Idempotency-Key`` with Stripe's semantics, scoped per user and per operation.

The key's row is inserted first, in the same unit of work as the operation, and its response is
stored before commit. A concurrent retry blocks on the key's unique index (PostgreSQL) or on the
single writer (SQLite) until the first commits, then replays its response; if the first rolled
back, the retry simply runs. Same key with a different request body is refused.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.errors import AppError
from mlservice.idempotency.tables import IdempotencyKey
from mlservice.orm import delete_some

MAX_KEY_LENGTH = 255


class IdempotencyKeyReused(AppError):
    status_code = 422
    code = "idempotency_key_reused"


@dataclass(frozen=True)
class Replay:
    status_code: int
    body: dict[str, Any]


def request_fingerprint(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def validate_key(key: str) -> str:
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise AppError(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters.",
            code="invalid_idempotency_key",
            status_code=400,
        )
    return key


async def _find(session: AsyncSession, user_id: uuid.UUID, scope: str, key: str) -> IdempotencyKey | None:
    stmt = select(IdempotencyKey).where(
        IdempotencyKey.user_id == user_id, IdempotencyKey.scope == scope, IdempotencyKey.key == key
    )
    return (await session.execute(stmt.execution_options(populate_existing=True))).scalar_one_or_none()


def _replay(record: IdempotencyKey, fingerprint: str) -> Replay:
    if record.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used with a different request. Use a new key for a new request."
        )
    if record.status_code is None or record.response is None:  # written in the same commit as the key
        raise RuntimeError(f"idempotency key {record.id} has no stored response")
    return Replay(record.status_code, record.response)


async def begin(
    session: AsyncSession, user_id: uuid.UUID, scope: str, key: str, fingerprint: str
) -> IdempotencyKey | Replay:
    """Claim ``key`` for this request, or return the stored response of the earlier one."""
    existing = await _find(session, user_id, scope, key)
    if existing is not None:
        return _replay(existing, fingerprint)
    record = IdempotencyKey(user_id=user_id, scope=scope, key=key, request_hash=fingerprint)
    try:
        async with session.begin_nested():
            session.add(record)
            await session.flush()
    except IntegrityError:
        existing = await _find(session, user_id, scope, key)
        if existing is None:
            raise
        return _replay(existing, fingerprint)
    return record


async def complete(
    session: AsyncSession, record: IdempotencyKey, status_code: int, body: dict[str, Any]
) -> None:
    record.status_code = status_code
    record.response = body
    await session.flush()


@dataclass(frozen=True)
class Outcome:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False

    def headers(self) -> dict[str, str]:
        return {"Idempotent-Replayed": "true"} if self.replayed else {}


async def run_once(
    session: AsyncSession,
    user_id: uuid.UUID,
    scope: str,
    key: str | None,
    fingerprint: str,
    operation: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
) -> Outcome:
    """Run ``operation`` unless ``key`` was seen; without a key it simply runs."""
    if key is None:
        return Outcome(*await operation())
    claimed = await begin(session, user_id, scope, validate_key(key), fingerprint)
    if isinstance(claimed, Replay):
        return Outcome(claimed.status_code, claimed.body, replayed=True)
    status_code, body = await operation()
    await complete(session, claimed, status_code, body)
    return Outcome(status_code, body)


async def delete_older(session: AsyncSession, created_before: datetime, *, limit: int) -> int:
    """Forget up to ``limit`` keys used before ``created_before`` (retention): a request with one
    of them again runs anew, as Stripe's do once a key is 24 hours old."""
    return await delete_some(
        session, IdempotencyKey.id, IdempotencyKey.created_at < created_before, limit=limit
    )
