from __future__ import annotations

from tests.conftest import Service


async def test_health_and_ready(service: Service) -> None:
    assert (await service.client.get("/health")).json()["status"] == "ok"
    ready = await service.client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def test_unknown_route_has_error_shape(service: Service) -> None:
    r = await service.client.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "not_found"
