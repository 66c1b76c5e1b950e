from __future__ import annotations

import uuid

from tests.conftest import Service
from tests.fixtures.api import ledger_totals


async def test_admin_adjusts_balance_with_a_ledger_entry(service: Service) -> None:
    user, admin = await service.user(), await service.admin()
    user_id = (await service.client.get("/api/users/me", headers=user)).json()["id"]
    path = f"/api/admin/users/{user_id}/adjustments"

    r = await service.client.post(path, json={"amount": -30, "note": "refund reversal"}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["wallet"]["balance"] == 70
    assert r.json()["entry"]["type"] == "adjustment"
    assert r.json()["entry"]["note"].startswith("refund reversal")

    too_much = await service.client.post(path, json={"amount": -71, "note": "x"}, headers=admin)
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "adjustment_exceeds_available"
    assert too_much.json()["error"]["details"] == {"available": 70}
    assert (
        await service.client.post(path, json={"amount": 0, "note": "x"}, headers=admin)
    ).status_code == 422
    assert (await service.client.post(path, json={"amount": 5, "note": ""}, headers=admin)).status_code == 422
    assert (await service.client.post(path, json={"amount": 5, "note": "x"}, headers=user)).status_code == 403
    missing = f"/api/admin/users/{uuid.uuid4()}/adjustments"
    assert (
        await service.client.post(missing, json={"amount": 5, "note": "x"}, headers=admin)
    ).status_code == 404
    assert await ledger_totals(service, user) == (70, 0, 2)
