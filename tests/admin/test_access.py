"""Every admin route refuses anonymous callers (401) and signed-in non-admins (403)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Service

SOMEONE = uuid.uuid4()
ROUTES = [
    ("GET", "/api/admin/users", None),
    ("GET", f"/api/admin/users/{SOMEONE}", None),
    ("PATCH", f"/api/admin/users/{SOMEONE}", {"is_active": False}),
    ("POST", f"/api/admin/users/{SOMEONE}/adjustments", {"amount": 5, "note": "x"}),
    ("POST", "/api/admin/grants", {"amount": 5, "note": "x"}),
    ("POST", "/api/admin/grants/1/void", None),
    ("POST", "/api/admin/promo-codes", {"code": "ABC", "amount": 1, "max_uses": 1}),
    ("POST", f"/api/admin/jobs/{SOMEONE}/refund", {"note": "x"}),
    ("GET", "/api/admin/history", None),
    ("DELETE", "/api/admin/history", None),
    ("GET", "/api/admin/stats", None),
    ("GET", "/api/admin/models", None),
    ("PATCH", "/api/admin/models/test-echo", {"max_batch_size": 1}),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_admin_routes_refuse_anonymous_and_non_admins(
    service: Service, method: str, path: str, body: dict[str, object] | None
) -> None:
    anonymous = await service.client.request(method, path, json=body)
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "not_authenticated")
    # Even with the admin token, which is only ever a second factor.
    user = await service.user() | {"X-Admin-Token": "x" * 40}
    refused = await service.client.request(method, path, json=body, headers=user)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "admin_required")
