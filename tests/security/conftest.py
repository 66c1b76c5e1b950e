"""Helpers for the hardening tests: clients from chosen addresses, and Redis under a key prefix of
each test's own (removed afterwards), so runs never see each other's counters."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from tests.conftest import PASSWORD, Service

REDIS_URL = os.environ.get("MLSERVICE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def client_at(service: Service, address: str, *, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """A client of ``service`` whose connections come from ``address`` (the ASGI scope's client)."""
    transport = httpx.ASGITransport(app=service.app, client=(address, 40_000))
    return httpx.AsyncClient(transport=transport, base_url=base_url)


async def register(client: httpx.AsyncClient, email: str | None = None, **headers: str) -> httpx.Response:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    return await client.post(
        "/api/auth/register", json={"email": email, "password": PASSWORD}, headers=headers
    )


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    prefix = f"mlservice-test:{os.getpid()}:{uuid.uuid4().hex[:12]}:"
    yield prefix
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
