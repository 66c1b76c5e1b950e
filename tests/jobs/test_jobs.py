from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.conftest import Service, wait_for_job
from tests.fixtures.api import ledger_totals, submit, wallet
from tests.fixtures.predictors import BatchRecordingEcho


async def test_job_succeeds_and_hold_is_captured(service: Service) -> None:
    headers = await service.user()
    r = await submit(service, headers, "hello world")
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert job["cost"] == 3
    done = await wait_for_job(service.client, headers, job["id"])
    assert done["status"] == "succeeded"
    assert done["output"]["echo"] == "HELLO WORLD"
    assert done["started_at"]
    assert done["finished_at"]
    assert done["processing_ms"] is not None
    assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}
    history = (await service.client.get("/api/wallet/transactions", headers=headers)).json()["items"]
    assert [(e["type"], e["amount"], e["held_delta"], e["job_id"]) for e in history[:2]] == [
        ("capture", -3, -3, job["id"]),
        ("hold", 0, 3, job["id"]),
    ]


async def test_model_failure_is_retried_then_fails_and_releases_hold(service: Service) -> None:
    headers = await service.user()
    job = (await submit(service, headers, "boom now")).json()
    done = await wait_for_job(service.client, headers, job["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "prediction_failed"
    assert "exploded" in done["error"]["message"]
    assert "after 3 attempts" in done["error"]["message"]
    assert done["attempts"] == service.settings.job_max_attempts == 3
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
    assert (await service.client.get("/api/wallet/transactions", headers=headers)).json()["items"][0][
        "type"
    ] == "release"


async def test_one_bad_item_does_not_fail_its_batch(service_factory: Any) -> None:
    BatchRecordingEcho.batches.clear()
    # Queued before any worker runs, so that the first worker finds the four waiting together.
    async with service_factory([BatchRecordingEcho], workers=0) as service:
        headers = await service.user()
        texts = ["a", "boom", "c", "d"]
        responses = await asyncio.gather(
            *(submit(service, headers, t, model=BatchRecordingEcho.slug) for t in texts)
        )
    # One attempt: the bad job fails at once instead of coming back for retries of its own.
    async with service_factory([BatchRecordingEcho], job_max_attempts=1) as service:
        jobs = [await wait_for_job(service.client, headers, r.json()["id"]) for r in responses]
        assert [j["status"] for j in jobs] == ["succeeded", "failed", "succeeded", "succeeded"]
        assert jobs[1]["error"]["code"] == "prediction_failed"
        assert [j["output"]["echo"] for j in jobs if j["output"]] == ["A", "C", "D"]
        assert (await wallet(service, headers))["balance"] == 100 - 3 * BatchRecordingEcho.default_price
    # The four ran as one batch, which "boom" failed; then each ran alone, so that only it failed.
    batches = BatchRecordingEcho.batches
    assert sorted(batches[0]) == texts, batches
    assert sorted(batches[1:]) == [[t] for t in texts], batches


async def test_cancel_queued_job_releases_hold(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        job = (await submit(service, headers)).json()
        assert await wallet(service, headers) == {"balance": 100, "held": 3, "available": 97}
        r = await service.client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
        assert r.status_code == 200
        assert r.json()["status"] == "canceled"
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        again = await service.client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_not_cancelable"
        assert await ledger_totals(service, headers) == (100, 0, 3)


async def test_finished_job_cannot_be_canceled(service: Service) -> None:
    headers = await service.user()
    job = (await submit(service, headers)).json()
    await wait_for_job(service.client, headers, job["id"])
    r = await service.client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
    assert r.status_code == 409
    assert (await wallet(service, headers))["balance"] == 97


async def test_other_peoples_jobs_are_invisible(service: Service) -> None:
    alice, bob = await service.user(), await service.user()
    job = (await submit(service, alice)).json()
    await wait_for_job(service.client, alice, job["id"])
    for method, path in [
        ("GET", f"/api/jobs/{job['id']}"),
        ("POST", f"/api/jobs/{job['id']}/cancel"),
        ("GET", f"/api/jobs/{job['id']}/input"),
        ("GET", f"/api/jobs/{job['id']}/artifacts/echo"),
        ("GET", f"/api/jobs/{uuid.uuid4()}"),
    ]:
        r = await service.client.request(method, path, headers=bob)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "job_not_found"
    assert (await service.client.get("/api/jobs", headers=bob)).json()["total"] == 0


async def test_list_jobs_paginated_without_results(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        ids = [(await submit(service, headers, f"t{i}")).json()["id"] for i in range(5)]
        page = (await service.client.get("/api/jobs?limit=2", headers=headers)).json()
        assert page["total"] == 5
        assert [j["id"] for j in page["items"]] == ids[::-1][:2]
        assert "output" not in page["items"][0]
        assert {"status", "model", "cost", "created_at", "started_at", "finished_at"} <= set(page["items"][0])
        rest = (await service.client.get("/api/jobs?limit=10&offset=2", headers=headers)).json()
        assert [j["id"] for j in rest["items"]] == ids[::-1][2:]
        queued = (await service.client.get("/api/jobs?status=queued", headers=headers)).json()
        assert queued["total"] == 5


@pytest.mark.parametrize(
    ("fields", "status", "code"),
    [
        ({"model": "no-such-model"}, 404, "model_not_found"),
        ({"text": "   "}, 422, "empty_text"),
        ({"params": "{not json"}, 422, "invalid_params"),
        ({"params": "[1, 2]"}, 422, "invalid_params"),
        ({"params": '{"sleep_ms": -1}'}, 422, "invalid_params"),
        ({"params": '{"unknown": 1}'}, 422, "invalid_params"),
        ({"text": "invalid"}, 422, "text_not_allowed"),
    ],
)
async def test_bad_input_costs_nothing(
    service: Service, fields: dict[str, str], status: int, code: str
) -> None:
    headers = await service.user()
    data = {"model": "test-echo", "text": "hello"} | fields
    r = await service.client.post("/api/jobs", data=data, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]
    assert await ledger_totals(service, headers) == (100, 0, 1)
    assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 0


async def test_missing_model_field_is_validation_error(service: Service) -> None:
    headers = await service.user()
    r = await service.client.post("/api/jobs", data={"text": "x"}, headers=headers)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


async def test_insufficient_credits_is_402(service: Service) -> None:
    headers, admin = await service.user(), await service.admin()
    await service.client.patch("/api/admin/models/test-echo", json={"price": 101}, headers=admin)
    r = await submit(service, headers)
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "insufficient_credits"
    assert await ledger_totals(service, headers) == (100, 0, 1)


async def test_price_change_and_disable_by_admin(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers, admin = await service.user(), await service.admin()
        old = (await submit(service, headers)).json()
        r = await service.client.patch("/api/admin/models/test-echo", json={"price": 11}, headers=admin)
        assert r.status_code == 200
        assert r.json()["price"] == 11
        models = {m["slug"]: m for m in (await service.client.get("/api/models")).json()}
        assert models["test-echo"]["price"] == 11
        new = (await submit(service, headers)).json()
        assert (old["cost"], new["cost"]) == (3, 11)
        assert (await service.client.get(f"/api/jobs/{old['id']}", headers=headers)).json()["cost"] == 3
        assert await wallet(service, headers) == {"balance": 100, "held": 14, "available": 86}

        r = await service.client.patch("/api/admin/models/test-echo", json={"enabled": False}, headers=admin)
        assert r.json()["enabled"] is False
        assert "test-echo" not in {m["slug"] for m in (await service.client.get("/api/models")).json()}
        r = await submit(service, headers)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "model_disabled"
        bad = await service.client.patch("/api/admin/models/test-echo", json={"price": -1}, headers=admin)
        assert bad.status_code == 422
        missing = await service.client.patch("/api/admin/models/nope", json={"price": 1}, headers=admin)
        assert missing.status_code == 404


async def test_fifty_concurrent_submissions_against_ten_runs_of_credit(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers, admin = await service.user(), await service.admin()
        await service.client.patch("/api/admin/models/test-echo", json={"price": 10}, headers=admin)
        responses = await asyncio.gather(*(submit(service, headers, f"job {i}") for i in range(50)))
        codes = sorted(r.status_code for r in responses)
        assert codes.count(201) == 10, codes
        assert codes.count(402) == 40, codes
        w = await wallet(service, headers)
        assert w == {"balance": 100, "held": 100, "available": 0}
        assert await ledger_totals(service, headers) == (100, 100, 11)
        assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 10


async def test_concurrent_idempotent_replays_make_one_job(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        key = headers | {"Idempotency-Key": "job-abc"}
        responses = await asyncio.gather(*(submit(service, key, "same") for _ in range(10)))
        assert {r.status_code for r in responses} == {201}
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 9
        assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 1
        assert await wallet(service, headers) == {"balance": 100, "held": 3, "available": 97}
        other = await submit(service, key, "different")
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
