from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import PASSWORD, Service
from tests.fixtures.api import totals
from tests.fixtures.history import user_id


async def users(service: Service, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await service.client.get("/api/admin/users", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def patch(service: Service, headers: dict[str, str], target: uuid.UUID, **body: Any) -> Any:
    return await service.client.patch(f"/api/admin/users/{target}", json=body, headers=headers)


async def test_list_and_search_users_with_balances(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin = await service.admin()
        ann = await service.user("ann.smith@example.com")
        await service.user("bob_jones@example.com")
        await service.user("annabel@example.org")
        job = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=ann)
        assert job.status_code == 201

        everyone = await users(service, admin)
        assert everyone["total"] == 4
        assert [u["role"] for u in everyone["items"]] == ["admin", "user", "user", "user"]
        by_email = {u["email"]: u for u in everyone["items"]}
        assert {k: by_email["ann.smith@example.com"][k] for k in ("balance", "held", "available")} == {
            "balance": 100,
            "held": 3,
            "available": 97,
        }
        assert by_email["ann.smith@example.com"]["id"] == str(await user_id(service, ann))
        assert by_email["ann.smith@example.com"]["is_active"] is True

        found = await users(service, admin, search="ANN")
        assert [u["email"] for u in found["items"]] == ["ann.smith@example.com", "annabel@example.org"]
        # LIKE wildcards in the search are matched literally.
        assert [u["email"] for u in (await users(service, admin, search="_"))["items"]] == [
            "bob_jones@example.com"
        ]
        assert (await users(service, admin, search="%"))["total"] == 0

        first = await users(service, admin, limit=2)
        second = await users(service, admin, limit=2, offset=2)
        assert first["total"] == second["total"] == 4
        emails = [u["email"] for u in first["items"] + second["items"]]
        assert sorted(emails) == sorted(by_email)

        one = await service.client.get(f"/api/admin/users/{await user_id(service, ann)}", headers=admin)
        assert one.json() == by_email["ann.smith@example.com"]


async def test_promote_demote_deactivate_and_reactivate(service: Service) -> None:
    admin = await service.admin()
    email = "carol@example.com"
    carol = await service.user(email)
    target = await user_id(service, carol)
    assert (await service.client.get("/api/admin/users", headers=carol)).status_code == 403

    r = await patch(service, admin, target, is_superuser=True)
    assert r.status_code == 200, r.text
    assert (r.json()["role"], r.json()["is_superuser"]) == ("admin", True)
    assert (await service.client.get("/api/admin/users", headers=carol)).status_code == 200

    r = await patch(service, admin, target, is_superuser=False, is_active=False)
    assert (r.json()["role"], r.json()["is_active"]) == ("user", False)
    # The token still verifies, but the account no longer may use it, nor sign in.
    assert (await service.client.get("/api/users/me", headers=carol)).status_code == 401
    login = await service.client.post("/api/auth/jwt/login", data={"username": email, "password": PASSWORD})
    assert login.status_code == 400

    r = await patch(service, admin, target, is_active=True)
    assert r.json()["is_active"] is True
    assert (await service.client.get("/api/users/me", headers=carol)).status_code == 200


async def test_an_admin_cannot_demote_or_deactivate_themselves(service: Service) -> None:
    admin = await service.admin()
    me = await user_id(service, admin)
    for body, code in [
        ({"is_superuser": False}, "cannot_demote_self"),
        ({"is_active": False}, "cannot_deactivate_self"),
        ({"is_superuser": False, "is_active": True}, "cannot_demote_self"),
    ]:
        r = await patch(service, admin, me, **body)
        assert (r.status_code, r.json()["error"]["code"]) == (409, code)
    # Confirming what is already true is fine.
    r = await patch(service, admin, me, is_superuser=True, is_active=True)
    assert r.status_code == 200
    assert (r.json()["role"], r.json()["is_active"]) == ("admin", True)
    # Another admin may demote this one.
    other = await service.admin()
    assert (await patch(service, other, me, is_superuser=False)).json()["role"] == "user"


async def test_bad_patches_and_unknown_users(service: Service) -> None:
    admin = await service.admin()
    target = await user_id(service, await service.user())
    for body in [{}, {"is_superuser": None}, {"role": "admin"}, {"is_active": "maybe"}]:
        r = await patch(service, admin, target, **body)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_error"), body
    missing = uuid.uuid4()
    r = await patch(service, admin, missing, is_active=False)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "user_not_found")
    r = await service.client.get(f"/api/admin/users/{missing}", headers=admin)
    assert (r.status_code, r.json()["error"]["code"]) == (404, "user_not_found")
    r = await service.client.get("/api/admin/users/not-a-uuid", headers=admin)
    assert r.status_code == 422


async def test_adjustments_never_take_available_credits_below_zero(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin, user = await service.admin(), await service.user()
        path = f"/api/admin/users/{await user_id(service, user)}/adjustments"
        job = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=user)
        assert job.status_code == 201  # 3 credits on hold: 97 available of 100

        r = await service.client.post(path, json={"amount": -98, "note": "too much"}, headers=admin)
        assert (r.status_code, r.json()["error"]["code"]) == (409, "adjustment_exceeds_available")
        assert r.json()["error"]["details"] == {"available": 97}
        r = await service.client.post(path, json={"amount": -97, "note": "all of it"}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["wallet"] == {"balance": 3, "held": 3, "available": 0}
        r = await service.client.post(path, json={"amount": -1, "note": "one more"}, headers=admin)
        assert r.status_code == 409
        wallet = totals((await service.client.get("/api/wallet", headers=user)).json())
        assert wallet == {"balance": 3, "held": 3, "available": 0}
