"""Administrators refund a charged job's credits, once, to the grants they were drawn from."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import Service, wait_for_job
from tests.fixtures.api import submit, wallet
from tests.fixtures.grants import check_grants
from tests.fixtures.history import user_id


def grants_of(body: dict[str, Any]) -> dict[int, tuple[int, int]]:
    """The grants of a ``GET /api/wallet`` answer: id → (remaining, held)."""
    return {g["id"]: (g["remaining"], g["held"]) for g in body["grants"]}


async def test_a_refund_restores_the_credits_and_grants_once(service: Service) -> None:
    admin, ann = await service.admin(), await service.user()
    # A bonus spent first (priority 0) and one spent next: the charge of 3 draws on both.
    body = {"user_id": str(await user_id(service, ann)), "amount": 2, "note": "n", "priority": 0}
    assert (await service.client.post("/api/admin/grants", json=body, headers=admin)).status_code == 201
    before = (await service.client.get("/api/wallet", headers=ann)).json()
    job = (await submit(service, ann)).json()
    assert (await wait_for_job(service.client, ann, job["id"]))["status"] == "succeeded"
    assert (await wallet(service, ann))["available"] == before["available"] - 3

    r = await service.client.post(
        f"/api/admin/jobs/{job['id']}/refund", json={"note": "wrong answer"}, headers=admin
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["wallet"] == {"balance": 102, "held": 0, "available": 102}
    entry = done["entry"]
    assert (entry["type"], entry["amount"], entry["job_id"]) == ("refund", 3, job["id"])
    assert entry["note"].startswith(f"Refund of job {job['id']} by admin-")
    assert entry["note"].endswith(": wrong answer")
    after = (await service.client.get("/api/wallet", headers=ann)).json()
    assert grants_of(after) == grants_of(before)
    assert after["available"] == before["available"]
    ledger = (await service.client.get("/api/wallet/transactions", headers=ann)).json()["items"]
    assert ledger[0]["id"] == entry["id"]
    await check_grants(service.db, await user_id(service, ann))

    again = await service.client.post(f"/api/admin/jobs/{job['id']}/refund", headers=admin)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "not_refundable")
    assert (await wallet(service, ann))["available"] == before["available"]


async def test_a_refund_without_a_note(service: Service) -> None:
    admin, ann = await service.admin(), await service.user()
    job = (await submit(service, ann)).json()
    assert (await wait_for_job(service.client, ann, job["id"]))["status"] == "succeeded"
    r = await service.client.post(f"/api/admin/jobs/{job['id']}/refund", headers=admin)
    assert r.status_code == 200, r.text
    note = r.json()["entry"]["note"]
    assert note.startswith(f"Refund of job {job['id']} by admin-")
    assert note.endswith("@example.com")


async def test_failed_unfinished_and_unknown_jobs_are_not_refunded(service_factory: Any) -> None:
    async with service_factory(workers=1) as service:
        admin, ann = await service.admin(), await service.user()
        failed = (await submit(service, ann, "boom")).json()
        assert (await wait_for_job(service.client, ann, failed["id"]))["status"] == "failed"
        r = await service.client.post(f"/api/admin/jobs/{failed['id']}/refund", headers=admin)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "not_refundable")
        r = await service.client.post(f"/api/admin/jobs/{uuid.uuid4()}/refund", headers=admin)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "job_not_found")
        assert (await service.client.post("/api/admin/jobs/nope/refund", headers=admin)).status_code == 422
        assert await wallet(service, ann) == {"balance": 100, "held": 0, "available": 100}
    async with service_factory(workers=0) as service:
        admin, ann = await service.admin(), await service.user()
        queued = (await submit(service, ann)).json()
        r = await service.client.post(f"/api/admin/jobs/{queued['id']}/refund", headers=admin)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "not_refundable")
        assert await wallet(service, ann) == {"balance": 100, "held": 3, "available": 97}


async def test_only_administrators_refund(service: Service) -> None:
    ann, bob = await service.user(), await service.user()
    job = (await submit(service, ann)).json()
    assert (await wait_for_job(service.client, ann, job["id"]))["status"] == "succeeded"
    for headers, status in ((ann, 403), (bob, 403), ({}, 401)):
        r = await service.client.post(f"/api/admin/jobs/{job['id']}/refund", headers=headers)
        assert r.status_code == status, r.text
    assert (await wallet(service, ann))["available"] == 97
