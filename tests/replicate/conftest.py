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
from tests.fixtures.live_server import STEPS_PLUGIN, Tls
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


@pytest.fixture(scope="session")
def replicate_tls_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The same on https (a certificate from the tests' own CA): Replicate's clients make
    ``FileOutput`` objects of https URLs only."""
    workdir = tmp_path_factory.mktemp("replicate-tls")
    url = f"sqlite+aiosqlite:///{workdir / 'mlservice.db'}"
    tls = Tls.make(workdir / "tls")
    with running_server("replicate-live-tls", url, model_cache, workdir, tls=tls) as server:
        yield server


@dataclass
class Account:
    """A new user of the live server: their login headers, an API key and a client using the key."""

    email: str
    headers: dict[str, str]
    key: str
    client: replicate.Client


def make_client(server: LiveServer, token: str) -> replicate.Client:
    # The client builds its transport itself: a CA to trust goes in the transport it is given.
    transport = httpx.HTTPTransport(verify=server.verify)
    client = replicate.Client(api_token=token, base_url=server.url, transport=transport)
    client.poll_interval = 0.1
    return client


def new_account(server: LiveServer) -> Account:
    email = server.register()
    headers = server.bearer(email)
    r = httpx.post(
        f"{server.url}/api/keys", json={"name": "replicate tests"}, headers=headers, verify=server.verify
    )
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    return Account(email, headers, key, make_client(server, key))


@pytest.fixture
def account(replicate_server: LiveServer) -> Account:
    return new_account(replicate_server)


@pytest.fixture
def tls_account(replicate_tls_server: LiveServer) -> Account:
    """An account of ``replicate_tls_server``."""
    return new_account(replicate_tls_server)


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
