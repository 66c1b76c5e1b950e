"""/health and /ready of the API: readiness waits for preloaded models and reports each one."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fixtures.predictors import EchoText, SlowToLoad


async def test_ready_waits_for_preloaded_models(service_factory: Any) -> None:
    SlowToLoad.release.clear()
    async with service_factory([EchoText, SlowToLoad], preload_models=True) as service:
        # Released before the app stops either way: stopping waits for the loading thread.
        try:
            assert (await service.client.get("/health")).status_code == 200
            for _ in range(200):
                r = await service.client.get("/ready")
                if r.json()["models"]["test-echo"] == "loaded":
                    break
                await asyncio.sleep(0.02)
            assert r.status_code == 503
            assert r.json() == {
                "status": "unavailable",
                "checks": {"database": "ok"},
                "models": {"test-echo": "loaded", "test-slow-load": "not loaded"},
                "running_jobs": 0,
            }

            SlowToLoad.release.set()
            for _ in range(200):
                r = await service.client.get("/ready")
                if r.status_code == 200:
                    break
                await asyncio.sleep(0.02)
            assert r.status_code == 200
            assert r.json()["status"] == "ok"
            assert r.json()["models"] == {"test-echo": "loaded", "test-slow-load": "loaded"}
        finally:
            SlowToLoad.release.set()


async def test_ready_without_preload_reports_models_as_they_are(service_factory: Any) -> None:
    async with service_factory([EchoText]) as service:
        r = await service.client.get("/ready")
        assert r.status_code == 200
        assert r.json()["models"] == {"test-echo": "not loaded"}


async def test_api_without_workers_has_no_models_to_wait_for(service_factory: Any) -> None:
    async with service_factory([EchoText], workers=0, preload_models=True) as service:
        r = await service.client.get("/ready")
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "checks": {"database": "ok"}, "models": {}, "running_jobs": 0}
