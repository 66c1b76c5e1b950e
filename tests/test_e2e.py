"""The whole user flow over HTTP against a real `mlservice serve` process on a free port
(tests/fixtures/live_server.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD, empty_database
from tests.fixtures.api import totals
from tests.fixtures.live_server import running_server

CAT_CLASS_IDS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


# The service's own defaults for what the browser tests' servers change (rate limits, workers).
DEFAULTS: dict[str, str | None] = dict.fromkeys(
    ["MLSERVICE_RATE_LIMITS_ENABLED", "MLSERVICE_WORKERS", "MLSERVICE_INFERENCE_THREADS"]
)


@pytest.fixture
def server(database_url: str, backend: str, model_cache: Path, tmp_path: Path) -> Iterator[str]:
    """``mlservice serve`` on this run's database (emptied first) with the built-in models only,
    and an administrator root@example.com; yields its base URL."""
    asyncio.run(empty_database(database_url))
    with running_server(
        f"e2e-{backend}", database_url, model_cache, tmp_path, env=DEFAULTS, echo_plugin=False
    ) as live:
        live.create_admin("root@example.com", PASSWORD)
        yield live.url


async def test_user_flow(server: str, chelsea_jpeg: bytes) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        # 1. register, log in, who am I
        r = await http.post("/api/auth/register", json={"email": "user@example.com", "password": PASSWORD})
        assert r.status_code == 201, r.text
        dup = await http.post("/api/auth/register", json={"email": "user@example.com", "password": PASSWORD})
        assert dup.status_code == 400
        assert dup.json()["error"]["code"] == "email_taken"
        token = (
            await http.post(
                "/api/auth/jwt/login", data={"username": "user@example.com", "password": PASSWORD}
            )
        ).json()["access_token"]
        user = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/api/users/me", headers=user)).json()["email"] == "user@example.com"

        # 2. the signup bonus; 3. a top-up and the history
        assert totals((await http.get("/api/wallet", headers=user)).json()) == {
            "balance": 100,
            "held": 0,
            "available": 100,
        }
        r = await http.post("/api/wallet/refill", json={"amount": 50}, headers=user)
        assert r.json()["wallet"]["balance"] == 150

        # 4. the catalog, with prices
        models = {m["slug"]: m for m in (await http.get("/api/models")).json()}
        classifier = models["image-classification"]
        price = classifier["price"]
        assert price > 0
        assert "top_k" in classifier["params_schema"]["properties"]

        # 5. classify the Chelsea cat; watch it go queued -> running -> succeeded
        r = await http.post(
            "/api/jobs",
            data={"model": "image-classification", "params": '{"top_k": 3}'},
            files={"file": ("chelsea.jpg", chelsea_jpeg, "image/jpeg")},
            headers=user,
        )
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["status"] == "queued"
        assert job["cost"] == price
        assert job["input"]["width"] == 451
        assert job["input"]["height"] == 300
        seen = {job["status"]}
        deadline = time.monotonic() + 120
        while job["status"] not in {"succeeded", "failed"}:
            assert time.monotonic() < deadline, job
            await asyncio.sleep(0.02)
            job = (await http.get(f"/api/jobs/{job['id']}", headers=user)).json()
            seen.add(job["status"])
        assert job["status"] == "succeeded", job
        predictions = job["output"]["predictions"]
        assert len(predictions) == 3
        assert predictions[0]["class_id"] in CAT_CLASS_IDS, predictions
        assert "cat" in predictions[0]["label"].lower()
        assert seen <= {"queued", "running", "succeeded"}
        assert totals((await http.get("/api/wallet", headers=user)).json()) == {
            "balance": 150 - price,
            "held": 0,
            "available": 150 - price,
        }
        history = (await http.get("/api/wallet/transactions", headers=user)).json()["items"]
        assert [e["type"] for e in history[:2]] == ["capture", "hold"]

        # a file that is not an image is refused and costs nothing
        r = await http.post(
            "/api/jobs",
            data={"model": "image-classification"},
            files={"file": ("notes.jpg", b"just some text", "image/jpeg")},
            headers=user,
        )
        assert r.status_code == 415
        assert (await http.get("/api/wallet", headers=user)).json()["balance"] == 150 - price

        # 6. the list (no results) and the job with its result
        listing = (await http.get("/api/jobs", headers=user)).json()
        assert listing["total"] == 1
        assert "output" not in listing["items"][0]
        upload = await http.get(f"/api/jobs/{job['id']}/input", headers=user)
        assert upload.content == chelsea_jpeg
        assert upload.headers["content-disposition"].startswith("attachment")

        # administrators change price and availability without code changes
        admin_token = (
            await http.post(
                "/api/auth/jwt/login", data={"username": "root@example.com", "password": PASSWORD}
            )
        ).json()["access_token"]
        admin = {"Authorization": f"Bearer {admin_token}"}
        assert (
            await http.patch("/api/admin/models/image-classification", json={"price": 1}, headers=user)
        ).status_code == 403
        r = await http.patch(
            "/api/admin/models/image-classification", json={"price": price + 2}, headers=admin
        )
        assert r.json()["price"] == price + 2
        assert (await http.get(f"/api/jobs/{job['id']}", headers=user)).json()["cost"] == price
        await http.patch("/api/admin/models/image-classification", json={"enabled": False}, headers=admin)
        r = await http.post(
            "/api/jobs",
            data={"model": "image-classification"},
            files={"file": ("chelsea.jpg", chelsea_jpeg, "image/jpeg")},
            headers=user,
        )
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "model_disabled"
