"""/metrics is not public: a scraper's bearer token when one is set, else this machine only, and
never a client that came through the proxy; the same on a worker's health port."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx

from mlservice.components import build_components
from mlservice.settings import Settings
from mlservice.worker import serve_health
from tests.fixtures.predictors import EchoText

TOKEN = "scrape-" + "s" * 32


def client_from(service: Any, host: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=service.app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_without_a_token_only_this_machine_reads_metrics(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        assert (await service.client.get("/metrics")).status_code == 200  # from 127.0.0.1
        async with client_from(service, "203.0.113.9") as outsider:
            r = await outsider.get("/metrics")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "metrics_forbidden"
        # Through the proxy (a trusted peer) from outside: the client is the outsider.
        r = await service.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403
        assert "mlservice_http_requests" not in r.text


async def test_with_a_token_the_scraper_sends_it(service_factory: Any) -> None:
    async with service_factory(workers=0, metrics_token=TOKEN) as service:
        async with client_from(service, "10.0.0.7") as scraper:
            missing = await scraper.get("/metrics")
            wrong = await scraper.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await scraper.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        for refused in (missing, wrong):
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "metrics_token_required"
            assert refused.headers["www-authenticate"].startswith("Bearer")
        assert right.status_code == 200
        assert "mlservice_http_requests" in right.text
        # A token set means the token, from this machine too.
        assert (await service.client.get("/metrics")).status_code == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_workers_health_port_asks_for_the_token(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(metrics_token=TOKEN)
    components = build_components(settings, {EchoText.slug: EchoText})
    port = _free_port()
    server = await serve_health(components, "127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/metrics")).status_code == 401
            assert (await client.get("/metrics", headers={"Authorization": "Bearer nope"})).status_code == 401
            r = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.status_code == 200
            assert "mlservice_model_loaded" in r.text
            assert (await client.get("/health")).status_code == 200
    finally:
        server.close()
        await server.wait_closed()
        await components.db.dispose()
