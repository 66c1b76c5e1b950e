from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image

from mlservice.jobs.tables import Job, JobStatus
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import totals
from tests.fixtures.history import add_request, add_submitted, user_id

TOKEN = "admin-token-" + "y" * 32


async def submit(service: Service, headers: dict[str, str], **fields: Any) -> Any:
    files = fields.pop("files", None)
    return await service.client.post("/api/jobs", data=fields, files=files, headers=headers)


async def history(service: Service, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await service.client.get("/api/admin/history", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


async def test_accepted_and_refused_requests_are_recorded(service: Service) -> None:
    user, admin = await service.user(), await service.admin()
    owner = await user_id(service, user)

    accepted = await submit(service, user | {"X-Request-ID": "req-accepted"}, model="test-echo", text="héllo")
    assert accepted.status_code == 201, accepted.text
    job = await wait_for_job(service.client, user, accepted.json()["id"])
    refusals = [
        (await submit(service, user, model="no-such-model", text="x"), 404, "model_not_found"),
        (
            await submit(service, user, model="test-echo", text="x", params='{"nope": 1}'),
            422,
            "invalid_params",
        ),
        (
            await submit(
                service, user, model="image-classification", files={"file": ("a.bin", b"not an image")}
            ),
            415,
            "unsupported_media_type",
        ),
        (await submit(service, user, text="no model named"), 422, "validation_error"),
    ]
    for response, status, code in refusals:
        assert (response.status_code, response.json()["error"]["code"]) == (status, code)

    items = (await history(service, admin))["items"]
    assert [(i["http_status"], i["error_code"], i["model"]) for i in items] == [
        (422, "validation_error", None),
        (415, "unsupported_media_type", "image-classification"),
        (422, "invalid_params", "test-echo"),
        (404, "model_not_found", "no-such-model"),
        (201, None, "test-echo"),
    ]
    assert {i["user_id"] for i in items} == {str(owner)}
    assert all(i["job"] is None and not i["replayed"] for i in items[:4])
    assert items[1]["input_bytes"] == len(b"not an image")
    assert items[3]["input_bytes"] == 1

    first = items[-1]
    assert first["input_bytes"] == len("héllo".encode())
    assert first["request_id"] == "req-accepted"
    assert first["image_width"] is None
    assert first["job"]["id"] == job["id"]
    assert first["job"]["status"] == "succeeded"
    assert first["job"]["processing_ms"] == job["processing_ms"]
    started, created = (datetime.fromisoformat(job[k]) for k in ("started_at", "created_at"))
    assert first["job"]["queue_ms"] == (started - created) / timedelta(milliseconds=1)
    assert first["job"]["error"] is None
    # Refusals cost nothing: only the accepted job was charged.
    wallet = totals((await service.client.get("/api/wallet", headers=user)).json())
    assert wallet == {"balance": 97, "held": 0, "available": 97}


async def test_image_sizes_are_kept_for_accepted_and_refused_images(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        user, admin = await service.user(), await service.admin()
        owner = await user_id(service, user)
        image = png(64, 48)
        ok = await submit(service, user, model="image-classification", files={"file": ("a.png", image)})
        assert ok.status_code == 201, ok.text
        # Leave 2 credits: the classifier costs 5.
        r = await service.client.post(
            f"/api/admin/users/{owner}/adjustments", json={"amount": -93, "note": "test"}, headers=admin
        )
        assert r.status_code == 200, r.text
        poor = await submit(service, user, model="image-classification", files={"file": ("b.png", image)})
        assert poor.status_code == 402

        refused, accepted = (await history(service, admin))["items"]
        assert (refused["http_status"], refused["error_code"]) == (402, "insufficient_credits")
        for item in (refused, accepted):
            assert (item["image_width"], item["image_height"], item["input_bytes"]) == (64, 48, len(image))
        assert accepted["job"]["status"] == "queued"
        assert accepted["job"]["queue_ms"] is None


async def test_idempotent_replays_are_recorded_once_as_replays(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        user, admin = await service.user(), await service.admin()
        key = user | {"Idempotency-Key": "k-1"}
        first = await submit(service, key, model="test-echo", text="same")
        again = await submit(service, key, model="test-echo", text="same")
        assert again.headers["idempotent-replayed"] == "true"
        reused = await submit(service, key, model="test-echo", text="different")
        assert reused.status_code == 422

        items = (await history(service, admin))["items"]
        assert [(i["http_status"], i["replayed"], i["error_code"]) for i in items] == [
            (422, False, "idempotency_key_reused"),
            (201, True, None),
            (201, False, None),
        ]
        assert items[1]["job"]["id"] == items[2]["job"]["id"] == first.json()["id"]
        stats = (await service.client.get("/api/admin/stats", headers=admin)).json()
        assert stats["overall"]["requests"] == 2  # the replay is not a new request


async def test_filters_and_cursor_pagination(service: Service) -> None:
    admin = await service.admin()
    alice_headers = await service.user("alice@example.com")
    alice, bob = await user_id(service, alice_headers), await user_id(service, await service.user())
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    async with service.db.session(write=True) as session:
        # Ten minutes apart, alternating users; every third refused.
        for n in range(12):
            owner, at = (alice, bob)[n % 2], t0 + timedelta(minutes=10 * n)
            if n % 3 == 0:
                add_request(
                    session, owner, "test-echo", at=at, http_status=402, error_code="insufficient_credits"
                )
            else:
                status = JobStatus.succeeded if n % 3 == 1 else JobStatus.failed
                await add_submitted(
                    session, owner, "test-echo" if n < 8 else "image-classification", at=at, status=status
                )

    async def ids(**params: Any) -> list[int]:
        """The requests listed, by their number n (made at t0 + n * 10 minutes)."""
        items = (await history(service, admin, limit=200, **params))["items"]
        return [(datetime.fromisoformat(i["created_at"]) - t0) // timedelta(minutes=10) for i in items]

    assert await ids() == list(range(11, -1, -1))
    assert await ids(user_id=str(alice)) == [10, 8, 6, 4, 2, 0]
    assert await ids(email="ALICE@example.com") == [10, 8, 6, 4, 2, 0]
    assert await ids(model="image-classification") == [11, 10, 8]
    assert await ids(status="rejected") == [9, 6, 3, 0]
    assert await ids(http_status=402) == [9, 6, 3, 0]
    assert await ids(status="succeeded") == [10, 7, 4, 1]
    assert await ids(status="failed", user_id=str(bob)) == [11, 5]
    assert await ids(since="2026-01-01T01:00:00Z", until="2026-01-01T01:30:00+00:00") == [8, 7, 6]
    assert await ids(since="2026-01-01T01:00:00", until="2026-01-01T01:30:00") == [8, 7, 6]  # naive: UTC
    assert await ids(email="nobody@example.com") == []

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await history(service, admin, limit=5, **({"cursor": cursor} if cursor else {}))
        seen += [i["created_at"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 12
    assert seen == sorted(seen, reverse=True)

    bad = await service.client.get("/api/admin/history", params={"cursor": "garbage!"}, headers=admin)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_cursor")
    bad = await service.client.get("/api/admin/history", params={"status": "lost"}, headers=admin)
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "validation_error")
    bad = await service.client.get(
        "/api/admin/history", params={"since": "0001-01-01T00:00:00+05:00"}, headers=admin
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_period")
    far = await history(service, admin, since="0001-01-01T00:00:00Z", until="9999-12-31T23:59:59Z")
    assert len(far["items"]) == 12


async def test_rows_written_at_the_same_moment_are_paged_by_id(service: Service) -> None:
    admin = await service.admin()
    owner = await user_id(service, await service.user())
    at = datetime(2026, 3, 1, tzinfo=UTC)
    async with service.db.session(write=True) as session:
        for n in range(7):
            add_request(session, owner, f"m{n}", at=at, http_status=404, error_code="model_not_found")
    models: list[str] = []
    cursor: str | None = None
    while True:
        page = await history(service, admin, limit=3, **({"cursor": cursor} if cursor else {}))
        models += [i["model"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert models == [f"m{n}" for n in range(6, -1, -1)]


async def test_delete_needs_an_admin_and_the_admin_token(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        admin = await service.admin()
        r = await service.client.delete("/api/admin/history", headers=admin | {"X-Admin-Token": "anything"})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "admin_token_not_configured")

    async with service_factory(workers=0, admin_token=TOKEN) as service:
        admin, user = await service.admin(), await service.user()
        owner = await user_id(service, user)
        t0 = datetime(2026, 2, 1, tzinfo=UTC)
        async with service.db.session(write=True) as session:
            jobs = [
                await add_submitted(session, owner, "test-echo", at=t0 + timedelta(days=n)) for n in range(4)
            ]
        job = await submit(service, user, model="test-echo", text="kept")
        assert job.status_code == 201

        for headers, code in [
            (admin, "bad_admin_token"),
            (admin | {"X-Admin-Token": TOKEN[:-1]}, "bad_admin_token"),
            (admin | {"X-Admin-Token": TOKEN + "z"}, "bad_admin_token"),
            (user | {"X-Admin-Token": TOKEN}, "admin_required"),
        ]:
            r = await service.client.delete("/api/admin/history", headers=headers)
            assert (r.status_code, r.json()["error"]["code"]) == (403, code)
        assert len((await history(service, admin))["items"]) == 5

        with_token = admin | {"X-Admin-Token": TOKEN}
        r = await service.client.delete(
            "/api/admin/history", params={"before": "2026-02-03T00:00:00Z"}, headers=with_token
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"deleted": 2}
        assert len((await history(service, admin))["items"]) == 3

        r = await service.client.delete("/api/admin/history", headers=with_token)
        assert r.json() == {"deleted": 3}
        assert (await history(service, admin))["items"] == []
        # Only the history went: jobs and the ledger are as they were.
        async with service.db.session() as session:
            for job_id in jobs:
                assert await session.get(Job, job_id) is not None
        listed = (await service.client.get("/api/jobs", headers=user)).json()
        assert listed["total"] == 5
        wallet = totals((await service.client.get("/api/wallet", headers=user)).json())
        assert wallet == {"balance": 100, "held": 3, "available": 97}


async def test_a_request_whose_job_was_deleted_shows_no_job(service: Service) -> None:
    admin = await service.admin()
    owner = await user_id(service, await service.user())
    async with service.db.session(write=True) as session:
        add_request(session, owner, "test-echo", at=datetime.now(UTC), job_id=None, http_status=201)
    (item,) = (await history(service, admin))["items"]
    assert item["job"] is None
    assert uuid.UUID(item["user_id"]) == owner


async def test_oversized_uploads_are_recorded_with_their_model(service_factory: Any) -> None:
    async with service_factory(workers=0, max_upload_bytes=1000) as service:
        user, admin = await service.user(), await service.admin()
        r = await submit(
            service, user, model="image-classification", files={"file": ("big.png", png(400, 400))}
        )
        assert r.status_code == 413, r.text
        (item,) = (await history(service, admin))["items"]
        assert (item["http_status"], item["model"], item["job"]) == (413, "image-classification", None)
        assert item["error_code"] == r.json()["error"]["code"]
