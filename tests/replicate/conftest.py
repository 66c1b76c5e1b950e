"""Fixtures of the /v1 tests: a live ``mlservice serve`` for Replicate's own Python client, and
helpers for the httpx tests that run in process on each database."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import replicate
from tests.conftest import Service
from tests.fixtures.live_server import STEPS_PLUGIN
from tests.web.conftest import LiveServer, running_server
from tests.webhooks.conftest import receiver  # noqa: F401 (a fixture: the webhook receiver on loopback)


@pytest.fixture(scope="session")
def replicate_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """An unmodified ``mlservice serve`` on SQLite with the built-in models, ``test-echo`` and
    ``test-steps`` (a job that runs in steps, long enough to be canceled while it runs)."""
    workdir = tmp_path_factory.mktemp("replicate-live")
    url = f"sqlite+aiosqlite:///{workdir / 'mlservice.db'}"
    with running_server("replicate-live-sqlite", url, model_cache, workdir, plugins=STEPS_PLUGIN) as server:
        yield server


@dataclass
class Account:
    """A new user of the live server: their login headers, an API key and a client using the key."""

    email: str
    headers: dict[str, str]
    key: str
    client: replicate.Client


def make_client(server: LiveServer, token: str) -> replicate.Client:
    client = replicate.Client(api_token=token, base_url=server.url)
    client.poll_interval = 0.1
    return client


@pytest.fixture
def account(replicate_server: LiveServer) -> Account:
    email = replicate_server.register()
    headers = replicate_server.bearer(email)
    r = httpx.post(f"{replicate_server.url}/api/keys", json={"name": "replicate tests"}, headers=headers)
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    return Account(email, headers, key, make_client(replicate_server, key))


def data_uri(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


async def create(
    service: Service,
    headers: dict[str, str],
    version: str = "test-echo",
    input: dict[str, Any] | None = None,
    *,
    prefer: str | None = None,
    **body: Any,
) -> httpx.Response:
    """POST /v1/predictions."""
    sent = dict(headers) | ({"Prefer": prefer} if prefer else {})
    payload = {"version": version, "input": {"text": "hello"} if input is None else input, **body}
    return await service.client.post("/v1/predictions", json=payload, headers=sent)


def refill(server: LiveServer, account: Account, amount: int) -> None:
    """Add credits (a demo payment) to the account."""
    r = httpx.post(f"{server.url}/api/wallet/refill", json={"amount": amount}, headers=account.headers)
    assert r.status_code == 200, r.text
