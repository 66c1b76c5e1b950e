"""The retention sweep over rows: expired ones go (with an upload's bytes, in local and database
storage), just-younger ones stay, pending webhooks and active keys are never touched, batches
stay within their size, each row is removed once however many sweep, and what went is counted."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mlservice.apikeys.tables import ApiKey
from mlservice.chats.tables import ChatMessage, TelegramLinkCode
from mlservice.history.tables import PredictionRequest
from mlservice.idempotency import service as idempotency
from mlservice.idempotency.tables import IdempotencyKey
from mlservice.observability.metrics import ServiceMetrics
from mlservice.retention.policy import RetentionPolicy
from mlservice.retention.sweeper import RetentionSweeper
from mlservice.types import utcnow
from mlservice.uploads.repository import upload_key
from mlservice.uploads.tables import UploadedFile
from mlservice.users.tables import AuthSession
from mlservice.webhooks.tables import WebhookDelivery
from tests.conftest import Service
from tests.fixtures.history import add_job, add_request, user_id
from tests.retention.conftest import removed_metric, storage_of, sweeper_of

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


def idempotency_key(owner: uuid.UUID, at: datetime) -> IdempotencyKey:
    return IdempotencyKey(
        user_id=owner,
        scope="jobs.create",
        key=uuid.uuid4().hex,
        request_hash="0" * 64,
        status_code=201,
        response={},
        created_at=at,
    )


def api_key(owner: uuid.UUID, *, created: datetime, revoked: datetime | None) -> ApiKey:
    return ApiKey(
        user_id=owner,
        name="key",
        prefix="mls_test",
        key_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        created_at=created,
        revoked_at=revoked,
    )


def delivery(owner: uuid.UUID, job_id: uuid.UUID, status: str, settled: datetime) -> WebhookDelivery:
    return WebhookDelivery(
        job_id=job_id,
        user_id=owner,
        event="completed",
        url="https://hooks.example.com/in",
        payload={},
        status=status,
        attempts=1,
        next_attempt_at=settled,
        created_at=settled - MINUTE,
        delivered_at=settled if status == "delivered" else None,
    )


def chat_message(owner: uuid.UUID, status: str, tried: datetime) -> ChatMessage:
    return ChatMessage(
        chat_id=7,
        user_id=owner,
        text="low",
        status=status,
        attempts=1,
        next_attempt_at=tried,
        created_at=tried,
    )


def upload(owner: uuid.UUID, expires: datetime) -> UploadedFile:
    return UploadedFile(
        id=uuid.uuid4(),
        user_id=owner,
        name="f.bin",
        content_type="application/octet-stream",
        size=3,
        sha256="0" * 64,
        file_metadata={},
        created_at=expires - DAY,
        expires_at=expires,
    )


async def ids(service: Service, column: Any) -> set[Any]:
    async with service.db.session() as session:
        return set(await session.scalars(select(column)))


@pytest.mark.parametrize("storage_backend", ["local", "database"])
async def test_expired_rows_go_and_younger_ones_stay(
    service_factory: Any, backend: str, storage_backend: str
) -> None:
    if storage_backend == "database" and backend != "postgresql":
        pytest.skip("database storage is for PostgreSQL deployments; SQLite uses local files")
    async with service_factory(storage_backend=storage_backend) as service:
        owner = await user_id(service, await service.user())
        now = utcnow()
        storage = storage_of(service)
        async with service.db.session(write=True) as session:
            job_id = add_job(session, owner, "test-echo", at=now)
            await session.flush()
            keys = {
                "old": idempotency_key(owner, now - DAY - SECOND),
                "young": idempotency_key(owner, now - DAY + MINUTE),
            }
            uploads = {"expired": upload(owner, now - SECOND), "live": upload(owner, now + MINUTE)}
            deliveries = {
                "delivered_old": delivery(owner, job_id, "delivered", now - 7 * DAY - SECOND),
                "delivered_young": delivery(owner, job_id, "delivered", now - 7 * DAY + MINUTE),
                # Given up 8 days ago: past a delivered one's 7 days, within a failed one's 30.
                "failed_young": delivery(owner, job_id, "failed", now - 8 * DAY),
                "failed_old": delivery(owner, job_id, "failed", now - 30 * DAY - SECOND),
                "pending": delivery(owner, job_id, "pending", now - 400 * DAY),
            }
            keys_api = {
                "revoked_old": api_key(owner, created=now - 90 * DAY, revoked=now - 30 * DAY - SECOND),
                "revoked_young": api_key(owner, created=now - 90 * DAY, revoked=now - 30 * DAY + MINUTE),
                "active": api_key(owner, created=now - 900 * DAY, revoked=None),
            }
            history = {
                "old": add_request(session, owner, "test-echo", at=now - 365 * DAY - SECOND),
                "young": add_request(session, owner, "test-echo", at=now - 365 * DAY + MINUTE),
            }
            browsers = {
                "expired": AuthSession(user_id=owner, expires_at=now - SECOND),
                "logged_out": AuthSession(user_id=owner, expires_at=now + DAY, ended_at=now - SECOND),
                "live": AuthSession(user_id=owner, expires_at=now + MINUTE),
            }
            codes = {
                "expired": TelegramLinkCode(code_hash="a" * 64, user_id=owner, expires_at=now - SECOND),
                "live": TelegramLinkCode(code_hash="b" * 64, user_id=owner, expires_at=now + MINUTE),
            }
            # Kept as long as delivered webhooks; a pending one however old it is.
            chat = {
                "sent_old": chat_message(owner, "sent", now - 7 * DAY - SECOND),
                "failed_old": chat_message(owner, "failed", now - 7 * DAY - SECOND),
                "sent_young": chat_message(owner, "sent", now - 7 * DAY + MINUTE),
                "pending": chat_message(owner, "pending", now - 400 * DAY),
            }
            session.add_all(
                [
                    *keys.values(),
                    *uploads.values(),
                    *deliveries.values(),
                    *keys_api.values(),
                    *browsers.values(),
                    *codes.values(),
                    *chat.values(),
                ]
            )
            await session.flush()
            for row in uploads.values():
                await storage.put(upload_key(row.id), b"abc", session=session)

        removed = await sweeper_of(service).sweep_once(now=now)

        assert removed == {
            "idempotency_keys": 1,
            "uploads": 1,
            "job_files": 0,
            "webhook_deliveries": 2,
            "api_keys": 1,
            "request_history": 1,
            "browser_sessions": 2,
            "telegram_link_codes": 1,
            "chat_messages": 2,
        }
        assert await ids(service, ChatMessage.id) == {chat["sent_young"].id, chat["pending"].id}
        assert await ids(service, IdempotencyKey.id) == {keys["young"].id}
        assert await ids(service, AuthSession.id) == {browsers["live"].id}
        assert await ids(service, TelegramLinkCode.code_hash) == {"b" * 64}
        assert await ids(service, UploadedFile.id) == {uploads["live"].id}
        assert not await storage.exists(upload_key(uploads["expired"].id))
        assert await storage.get(upload_key(uploads["live"].id)) == b"abc"
        assert await ids(service, WebhookDelivery.id) == {
            deliveries[name].id for name in ("delivered_young", "failed_young", "pending")
        }
        assert await ids(service, ApiKey.id) == {keys_api["revoked_young"].id, keys_api["active"].id}
        assert await ids(service, PredictionRequest.id) == {history["young"].id}
        # Nothing else is old enough: the next sweep finds nothing.
        assert not any((await sweeper_of(service).sweep_once(now=now)).values())


async def test_more_rows_than_a_batch_go_in_one_sweep_in_small_batches(
    service_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    batches: list[int] = []
    real = idempotency.delete_older

    async def recorded(*args: Any, **kwargs: Any) -> int:
        removed = await real(*args, **kwargs)
        batches.append(removed)
        return removed

    monkeypatch.setattr(idempotency, "delete_older", recorded)
    async with service_factory(retention_batch_size=3) as service:
        owner = await user_id(service, await service.user())
        now = utcnow()
        async with service.db.session(write=True) as session:
            session.add_all(idempotency_key(owner, now - 2 * DAY) for _ in range(8))
            session.add(idempotency_key(owner, now))
            for _ in range(7):
                add_request(session, owner, "test-echo", at=now - 400 * DAY)

        with caplog.at_level(logging.INFO, logger="mlservice.retention.sweeper"):
            removed = await sweeper_of(service).sweep_once(now=now)

        assert removed["idempotency_keys"] == 8
        assert removed["request_history"] == 7
        assert batches == [3, 3, 2]  # each batch its own transaction of at most 3 rows
        assert len(await ids(service, IdempotencyKey.id)) == 1
        assert await ids(service, PredictionRequest.id) == set()
        metric = removed_metric(service)
        assert metric["idempotency_keys"] == 8
        assert metric["request_history"] == 7
        assert metric["uploads"] == metric["job_files"] == metric["api_keys"] == 0
        lines = [r.getMessage() for r in caplog.records if r.name == "mlservice.retention.sweeper"]
        assert lines == ["retention removed 8 idempotency_keys, 7 request_history"]

        caplog.clear()
        with caplog.at_level(logging.INFO, logger="mlservice.retention.sweeper"):
            await sweeper_of(service).sweep_once(now=now)
        assert [r for r in caplog.records if r.name == "mlservice.retention.sweeper"] == []


async def test_sweeps_at_once_remove_each_row_once(service_factory: Any) -> None:
    async with service_factory(retention_batch_size=4) as service:
        owner = await user_id(service, await service.user())
        now = utcnow()
        async with service.db.session(write=True) as session:
            session.add_all(idempotency_key(owner, now - 2 * DAY) for _ in range(10))
            rows = [upload(owner, now - MINUTE) for _ in range(6)]
            session.add_all(rows)
        for row in rows:
            await storage_of(service).put(upload_key(row.id), b"x")
        components = service.app.state.components
        # A second process's sweeper on the same database and storage.
        other = RetentionSweeper(
            components.db, components.storage, RetentionPolicy(batch_size=4), ServiceMetrics(), interval_s=0
        )
        first, second = await asyncio.gather(
            sweeper_of(service).sweep_once(now=now), other.sweep_once(now=now)
        )
        assert first["idempotency_keys"] + second["idempotency_keys"] == 10
        assert first["uploads"] + second["uploads"] == 6
        assert await ids(service, IdempotencyKey.id) == set()
        assert await ids(service, UploadedFile.id) == set()
        for row in rows:
            assert not await storage_of(service).exists(upload_key(row.id))


async def test_the_sweeper_runs_beside_the_workers(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        assert service.app.state.components.retention is None  # an API process that runs no jobs
    async with service_factory(retention_sweep_interval_seconds=0.05) as service:
        owner = await user_id(service, await service.user())
        async with service.db.session(write=True) as session:
            session.add(idempotency_key(owner, utcnow() - 2 * DAY))
        deadline = asyncio.get_running_loop().time() + 10
        while await ids(service, IdempotencyKey.id):
            assert asyncio.get_running_loop().time() < deadline, "the background sweep never ran"
            await asyncio.sleep(0.05)
        assert removed_metric(service)["idempotency_keys"] == 1
    # Stopped with the process (leaving the block closed it); 0 runs no background sweep at all.
    async with service_factory(retention_sweep_interval_seconds=0) as service:
        sweeper = sweeper_of(service)
        assert sweeper._task is None
        assert not any((await sweeper.sweep_once()).values())  # still callable by hand


async def test_an_upload_lives_as_long_as_the_setting_says(service_factory: Any) -> None:
    async with service_factory(retention_uploads_hours=2) as service:
        headers = await service.user()
        r = await service.client.post("/v1/files", files={"content": ("a.txt", b"abc")}, headers=headers)
        assert r.status_code == 201, r.text
        body = r.json()
        lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
        assert lifetime == timedelta(hours=2)
        # Gone once that is over, bytes and all.
        assert (await sweeper_of(service).sweep_once(now=utcnow() + 2 * timedelta(hours=1, seconds=1)))[
            "uploads"
        ] == 1
        assert (await service.client.get(f"/v1/files/{body['id']}", headers=headers)).status_code == 404
        assert not await storage_of(service).exists(upload_key(uuid.UUID(body["id"])))
