"""A webhook receiver on loopback: a small ASGI app served by uvicorn in the test's event loop
(``serve_in_loop``, tests/fixtures/live_server.py), recording every request it gets; what it
answers depends on the path."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import Service
from tests.fixtures.broker import broker_url, worker_env  # noqa: F401 (fixtures for the RabbitMQ test)
from tests.fixtures.live_server import serve_in_loop

# Short retries, loopback allowed: what every test here runs with unless it says otherwise.
FAST = {
    "webhook_allow_private": True,
    "webhook_retry_delays": [0.05, 0.1],
    "webhook_max_attempts": 3,
    "webhook_timeout_seconds": 5,
}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    @property
    def event(self) -> str:
        return self.headers["webhook-event"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Paths: ``/ok…`` 200; ``/flaky/N…`` 500 for the first N requests, then 200; ``/down…`` 500;
    ``/reject…`` 400; ``/redirect…`` 307; ``/hang…`` no answer until the test ends."""

    port: int = 0
    requests: list[Received] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, check: Callable[[], bool], within: float = 30) -> None:
        deadline = time.monotonic() + within
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"the receiver got only {[(r.path, r.status) for r in self.requests]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), 0.1)

    def answer(self, path: str) -> int:
        self.seen[path] += 1
        if path.startswith("/flaky/"):
            failures = int(path.split("/")[2])
            return 500 if self.seen[path] <= failures else 200
        for prefix, status in (("/down", 500), ("/reject", 400), ("/redirect", 307)):
            if path.startswith(prefix):
                return status
        return 200

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        status = 200 if path.startswith("/hang") else self.answer(path)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append(Received(path, headers, body, time.time(), status))
        self.arrived.set()
        if path.startswith("/hang"):
            await self.release.wait()
        extra = [(b"location", self.url("/ok").encode())] if status == 307 else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    app = Receiver()
    async with serve_in_loop(app, timeout_graceful_shutdown=1) as address:
        app.port = address.port
        try:
            yield app
        finally:
            app.release.set()  # before the server stops: it waits for the requests it is answering


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> None:
    """Check a delivery as a receiver would: Standard Webhooks, written from its description."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    message_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance_s, "stale or future timestamp"
    expected = hmac.new(key, message_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256)
    sent = [s.split(",", 1) for s in headers["webhook-signature"].split()]
    assert any(
        version == "v1" and hmac.compare_digest(base64.b64decode(mac), expected.digest())
        for version, mac in sent
    ), "bad signature"


async def secret_of(service: Service, headers: dict[str, str]) -> str:
    r = await service.client.get("/api/webhooks/secret", headers=headers)
    assert r.status_code == 200, r.text
    secret: str = r.json()["secret"]
    return secret


async def deliveries(service: Service, headers: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    r = await service.client.get(f"/api/jobs/{job_id}/webhooks", headers=headers)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


async def settled(
    service: Service, headers: dict[str, str], job_id: str, count: int, within: float = 30
) -> list[dict[str, Any]]:
    """The job's deliveries once there are ``count`` of them and none is pending."""
    deadline = time.monotonic() + within
    while True:
        rows = await deliveries(service, headers, job_id)
        if len(rows) == count and all(row["status"] != "pending" for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries of {job_id} not settled: {rows}")
        await asyncio.sleep(0.05)
