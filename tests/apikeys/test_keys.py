from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select, update

from mlservice.apikeys import service as keys
from mlservice.apikeys.tables import ApiKey
from mlservice.types import utcnow
from tests.conftest import Service, wait_for_job

LISTED_FIELDS = {"id", "name", "prefix", "created_at", "last_used_at"}


async def new_key(service: Service, headers: dict[str, str], name: str = "laptop") -> dict[str, Any]:
    r = await service.client.post("/api/keys", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def me(service: Service, headers: dict[str, str]) -> int:
    return (await service.client.get("/api/users/me", headers=headers)).status_code


@contextmanager
def key_writes(service: Service) -> Iterator[list[str]]:
    """Every UPDATE of api_keys the app's engine runs while the block is open."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE API_KEYS"):
            seen.append(statement)

    engine = service.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def test_key_format_and_checksum() -> None:
    made = {keys.generate_key() for _ in range(200)}
    assert len(made) == 200
    for key in made:
        assert key.startswith("mls_")
        assert len(key) == keys.KEY_LENGTH == 50
        assert key[4:].isalnum()
        assert keys.is_well_formed(key)
    key = made.pop()
    # Any one character changed in the random part or the checksum is caught without a lookup.
    for i in range(4, len(key)):
        other = "a" if key[i] != "a" else "b"
        assert not keys.is_well_formed(key[:i] + other + key[i + 1 :])
    assert not keys.is_well_formed(key[:-1])
    assert not keys.is_well_formed(key + "0")
    assert not keys.is_well_formed("mls_" + "-" * 46)


async def test_create_list_revoke(service: Service) -> None:
    headers = await service.user()
    created = await new_key(service, headers, "  ci runner  ")
    assert set(created) == LISTED_FIELDS | {"key"}
    key = created["key"]
    assert keys.is_well_formed(key)
    assert created["name"] == "ci runner"
    assert created["prefix"] == key[:12]
    assert created["last_used_at"] is None

    listed = await service.client.get("/api/keys", headers=headers)
    assert listed.status_code == 200
    assert [set(k) for k in listed.json()] == [LISTED_FIELDS]
    assert listed.json()[0]["id"] == created["id"]
    # Neither the key nor its hash is ever shown again.
    assert key not in listed.text
    assert key[12:20] not in listed.text
    assert hashlib.sha256(key.encode()).hexdigest() not in listed.text

    newer = await new_key(service, headers, "second")
    ids = [k["id"] for k in (await service.client.get("/api/keys", headers=headers)).json()]
    assert ids == [newer["id"], created["id"]]

    r = await service.client.delete(f"/api/keys/{created['id']}", headers=headers)
    assert r.status_code == 204
    assert await me(service, bearer(key)) == 401  # at once
    assert await me(service, bearer(newer["key"])) == 200
    ids = [k["id"] for k in (await service.client.get("/api/keys", headers=headers)).json()]
    assert ids == [newer["id"]]
    r = await service.client.delete(f"/api/keys/{created['id']}", headers=headers)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "api_key_not_found"


async def test_a_key_works_where_a_login_token_does(service: Service) -> None:
    headers = await service.user()
    user_id = (await service.client.get("/api/users/me", headers=headers)).json()["id"]
    key = bearer((await new_key(service, headers))["key"])

    assert (await service.client.get("/api/users/me", headers=key)).json()["id"] == user_id
    wallet = await service.client.get("/api/wallet", headers=key)
    assert wallet.status_code == 200
    assert wallet.json()["available"] == 100
    r = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "by key"}, headers=key)
    assert r.status_code == 201, r.text
    done = await wait_for_job(service.client, key, r.json()["id"])
    assert done["output"]["echo"] == "BY KEY"
    assert (await service.client.get("/api/wallet", headers=key)).json()["available"] == 97

    # A key may manage keys, like a login token.
    second = await new_key(service, key, "made by a key")
    assert len((await service.client.get("/api/keys", headers=key)).json()) == 2
    r = await service.client.delete(f"/api/keys/{second['id']}", headers=key)
    assert r.status_code == 204
    # `Token <key>`, the word some prediction API clients use, works too.
    r = await service.client.get(
        "/api/wallet", headers={"Authorization": key["Authorization"].replace("Bearer", "Token")}
    )
    assert r.status_code == 200


async def test_unknown_garbled_and_foreign_tokens_are_401(service: Service) -> None:
    headers = await service.user()
    key = (await new_key(service, headers))["key"]
    garbled = key[:-1] + ("A" if key[-1] != "A" else "B")
    for token in (
        keys.generate_key(),  # well-formed, never issued
        garbled,  # bad checksum
        key[:-1],
        "mls_",
        "mls_" + "x" * 200,
        key.lower(),
    ):
        r = await service.client.get("/api/wallet", headers=bearer(token))
        assert r.status_code == 401, token
        assert r.json()["error"]["code"] == "not_authenticated"
    r = await service.client.get("/api/wallet", headers={"Authorization": f"Basic {key}"})
    assert r.status_code == 401
    # A JWT still works beside keys.
    assert await me(service, headers) == 200


async def test_another_users_key_is_not_found(service: Service) -> None:
    owner = await service.user()
    key = await new_key(service, owner)
    other = await service.user()
    r = await service.client.delete(f"/api/keys/{key['id']}", headers=other)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "api_key_not_found"
    assert (await service.client.get("/api/keys", headers=other)).json() == []
    assert await me(service, bearer(key["key"])) == 200
    r = await service.client.delete(f"/api/keys/{uuid.uuid4()}", headers=owner)
    assert r.status_code == 404


async def test_only_the_hash_is_stored(service: Service) -> None:
    headers = await service.user()
    created = await new_key(service, headers)
    key = created["key"]
    async with service.db.session() as session:
        row = await session.get(ApiKey, uuid.UUID(created["id"]))
    assert row is not None
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.prefix == key[:12]
    stored = [str(getattr(row, c.key)) for c in ApiKey.__table__.columns]
    assert not any(key in value or key[12:] in value for value in stored)


async def test_inactive_users_keys_are_refused(service: Service) -> None:
    admin = await service.admin()
    headers = await service.user()
    user_id = (await service.client.get("/api/users/me", headers=headers)).json()["id"]
    key = bearer((await new_key(service, headers))["key"])
    r = await service.client.patch(f"/api/admin/users/{user_id}", json={"is_active": False}, headers=admin)
    assert r.status_code == 200, r.text
    assert await me(service, key) == 401
    r = await service.client.patch(f"/api/admin/users/{user_id}", json={"is_active": True}, headers=admin)
    assert await me(service, key) == 200


async def test_last_use_is_written_at_most_once_a_minute(service_factory: Any) -> None:
    # What this process read of the key is not kept (the test changes it behind its back).
    async with service_factory(auth_cache_seconds=0) as service:
        await _last_use_is_written_at_most_once_a_minute(service)


async def _last_use_is_written_at_most_once_a_minute(service: Service) -> None:
    headers = await service.user()
    created = await new_key(service, headers)
    key = bearer(created["key"])

    with key_writes(service) as writes:
        for _ in range(5):
            assert await me(service, key) == 200
    assert len(writes) == 1
    listed = (await service.client.get("/api/keys", headers=headers)).json()[0]
    assert listed["last_used_at"] is not None
    first_use = listed["last_used_at"]
    # A JWT request writes nothing.
    with key_writes(service) as writes:
        assert await me(service, headers) == 200
        assert (await service.client.get("/api/wallet", headers=key)).status_code == 200
    assert writes == []

    # A minute later, the next use is recorded.
    async with service.db.session(write=True) as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == uuid.UUID(created["id"]))
            .values(last_used_at=utcnow() - timedelta(minutes=2))
        )
    with key_writes(service) as writes:
        assert await me(service, key) == 200
        assert await me(service, key) == 200
    assert len(writes) == 1
    listed = (await service.client.get("/api/keys", headers=headers)).json()[0]
    assert listed["last_used_at"] > first_use

    # Requests that fail after authenticating still count as a use.
    async with service.db.session(write=True) as session:
        await session.execute(update(ApiKey).values(last_used_at=None))
    r = await service.client.get(f"/api/jobs/{uuid.uuid4()}", headers=key)
    assert r.status_code == 404
    async with service.db.session() as session:
        used = await session.scalar(select(ApiKey.last_used_at).where(ApiKey.id == uuid.UUID(created["id"])))
    assert used is not None


async def test_fifty_active_keys_at_most(service_factory: Any) -> None:
    async with service_factory(rate_limits_enabled=False) as service:
        headers = await service.user()
        first = await new_key(service, headers)
        user_id = uuid.UUID((await service.client.get("/api/users/me", headers=headers)).json()["id"])
        async with service.db.session(write=True) as session:
            for i in range(keys.MAX_ACTIVE_KEYS - 1):
                made = keys.generate_key()
                session.add(
                    ApiKey(user_id=user_id, name=f"k{i}", prefix=made[:12], key_hash=keys.hash_key(made))
                )
        r = await service.client.post("/api/keys", json={"name": "one too many"}, headers=headers)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "too_many_api_keys"
        assert len((await service.client.get("/api/keys", headers=headers)).json()) == keys.MAX_ACTIVE_KEYS
        # Revoked keys do not count.
        assert (await service.client.delete(f"/api/keys/{first['id']}", headers=headers)).status_code == 204
        await new_key(service, headers, "fits again")


async def test_key_creation_is_rate_limited(service_factory: Any) -> None:
    async with service_factory(rate_limit_api_keys="2/hour") as service:
        headers = await service.user()
        await new_key(service, headers)
        await new_key(service, headers)
        r = await service.client.post("/api/keys", json={"name": "third"}, headers=headers)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) > 0
        # Per user: someone else still can.
        await new_key(service, await service.user())


async def test_names_are_checked_and_anonymous_is_refused(service: Service) -> None:
    headers = await service.user()
    for body in (
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "a\nb"},
        {},
        {"name": "a", "x": 1},
    ):
        r = await service.client.post("/api/keys", json=body, headers=headers)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "validation_error"
    assert (await service.client.post("/api/keys", json={"name": "a"})).status_code == 401
    assert (await service.client.get("/api/keys")).status_code == 401
    assert (await service.client.delete(f"/api/keys/{uuid.uuid4()}")).status_code == 401


async def test_openapi_documents_keys(service: Service) -> None:
    spec = (await service.client.get("/openapi.json")).json()
    scheme = spec["components"]["securitySchemes"]["APIKey"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    wallet = spec["paths"]["/api/wallet"]["get"]
    assert {"APIKey": []} in wallet["security"]
    create = spec["paths"]["/api/keys"]["post"]
    assert {"201", "401", "409", "422", "429"} <= set(create["responses"])
    assert "key" not in spec["components"]["schemas"]["ApiKeyRead"]["properties"]
