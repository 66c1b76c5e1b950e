from __future__ import annotations

from typing import Any

from sqlalchemy import update

from mlservice.catalog.tables import CatalogModel
from tests.conftest import Service, wait_for_job
from tests.fixtures.predictors import EchoText

PATH = "/api/admin/models/test-echo"


async def admin_models(service: Service, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = await service.client.get("/api/admin/models", headers=headers)
    assert r.status_code == 200, r.text
    return {m["slug"]: m for m in r.json()}


async def test_batching_limits_are_seeded_from_the_predictor(service: Service) -> None:
    echo = (await admin_models(service, await service.admin()))["test-echo"]
    assert (echo["max_batch_size"], echo["max_wait_ms"], echo["batch_size_limit"]) == (
        EchoText.max_batch_size,
        EchoText.max_wait_ms,
        EchoText.max_batch_size,
    )
    public = (await service.client.get("/api/models/test-echo")).json()
    assert "max_batch_size" not in public


async def test_batching_limits_are_validated(service: Service) -> None:
    admin = await service.admin()
    r = await service.client.patch(PATH, json={"max_batch_size": 2, "max_wait_ms": 0}, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["max_batch_size"], r.json()["max_wait_ms"]) == (2, 0)
    r = await service.client.patch(PATH, json={"max_wait_ms": 1000, "price": 7}, headers=admin)
    assert (r.json()["max_batch_size"], r.json()["max_wait_ms"], r.json()["price"]) == (2, 1000, 7)

    too_big = await service.client.patch(
        PATH, json={"max_batch_size": EchoText.max_batch_size + 1}, headers=admin
    )
    assert (too_big.status_code, too_big.json()["error"]["code"]) == (422, "batch_size_too_large")
    assert too_big.json()["error"]["details"] == {"limit": EchoText.max_batch_size}
    for body in [
        {"max_batch_size": 0},
        {"max_batch_size": -1},
        {"max_wait_ms": -1},
        {"max_wait_ms": 1001},
        {"max_wait_ms": 1.5},
        {},
        {"max_batch_size": None},
    ]:
        r = await service.client.patch(PATH, json=body, headers=admin)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error"), body
    r = await service.client.patch("/api/admin/models/no-such-model", json={"max_wait_ms": 5}, headers=admin)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "model_not_found")
    # Nothing refused was applied.
    echo = (await admin_models(service, admin))["test-echo"]
    assert (echo["max_batch_size"], echo["max_wait_ms"], echo["price"]) == (2, 1000, 7)


async def test_limits_survive_restarts_and_workers_use_them(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin, user = await service.admin(), await service.user()
        r = await service.client.patch(PATH, json={"max_batch_size": 2, "max_wait_ms": 50}, headers=admin)
        assert r.status_code == 200, r.text
        # A backlog for the next start's workers, which find it before they take any job.
        ids = []
        for n in range(8):
            job = await service.client.post(
                "/api/jobs", data={"model": "test-echo", "text": f"j{n}"}, headers=user
            )
            ids.append(job.json()["id"])

    # The same database and JWT secret: the tokens of the first start still work.
    async with service_factory(workers=1) as service:
        echo = (await admin_models(service, admin))["test-echo"]
        assert (echo["max_batch_size"], echo["max_wait_ms"]) == (2, 50)
        jobs = [await wait_for_job(service.client, user, job_id) for job_id in ids]
        sizes = [j["output"]["batch_size"] for j in jobs]
        # Without the limit a backlog of 8 fills batches of EchoText's 4.
        assert max(sizes) == 2, sizes


async def test_catalog_sync_clamps_batch_size_and_fills_a_missing_wait(service_factory: Any) -> None:
    async with service_factory(workers=0) as service, service.db.session(write=True) as session:
        # A row from before max_wait_ms existed, and a batch size the predictor cannot take.
        await session.execute(
            update(CatalogModel)
            .where(CatalogModel.slug == "test-echo")
            .values(max_batch_size=64, max_wait_ms=None)
        )
    async with service_factory(workers=0) as service:
        echo = (await admin_models(service, await service.admin()))["test-echo"]
        assert (echo["max_batch_size"], echo["max_wait_ms"]) == (
            EchoText.max_batch_size,
            EchoText.max_wait_ms,
        )
