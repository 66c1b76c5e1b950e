"""Job inputs and artifacts stored in PostgreSQL (MLSERVICE_STORAGE_BACKEND=database)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mlservice.storage.database import DatabaseStorage
from mlservice.storage.tables import FileBlob
from tests.conftest import Service, wait_for_job


async def stored_keys(service: Service) -> list[str]:
    async with service.db.session() as session:
        return sorted(await session.scalars(select(FileBlob.key)))


async def test_inputs_and_artifacts_live_in_the_database(
    service_factory: Any, backend: str, tmp_path: Path, chelsea_jpeg: bytes
) -> None:
    if backend != "postgresql":
        pytest.skip("database storage is for PostgreSQL deployments; SQLite uses local files")
    async with service_factory(storage_backend="database", storage_dir=tmp_path / "unused") as service:
        headers = await service.user()
        image = await service.client.post(
            "/api/jobs",
            data={"model": "image-classification"},
            files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")},
            headers=headers,
        )
        echo = await service.client.post(
            "/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=headers
        )
        image_job = await wait_for_job(service.client, headers, image.json()["id"])
        echo_job = await wait_for_job(service.client, headers, echo.json()["id"])
        assert image_job["status"] == echo_job["status"] == "succeeded"
        assert image_job["output"]["predictions"][0]["class_id"] in range(281, 286)

        got = await service.client.get(f"/api/jobs/{image_job['id']}/input", headers=headers)
        assert got.status_code == 200
        assert got.content == chelsea_jpeg
        artifact = await service.client.get(f"/api/jobs/{echo_job['id']}/artifacts/echo", headers=headers)
        assert artifact.status_code == 200
        assert artifact.content == b"hi"
        # Another user sees neither.
        other = await service.user()
        assert (
            await service.client.get(f"/api/jobs/{image_job['id']}/input", headers=other)
        ).status_code == 404

        assert await stored_keys(service) == sorted(
            [f"jobs/{image_job['id']}/input", f"jobs/{echo_job['id']}/artifacts/echo"]
        )
        assert not (tmp_path / "unused").exists()

        # A refused upload (not an image) stores nothing: the row rolls back with the job.
        bad = await service.client.post(
            "/api/jobs",
            data={"model": "image-classification"},
            files={"file": ("x.jpg", b"not an image at all", "image/jpeg")},
            headers=headers,
        )
        assert bad.status_code == 415
        assert len(await stored_keys(service)) == 2


async def test_database_storage_basics(service_factory: Any, backend: str) -> None:
    if backend != "postgresql":
        with pytest.raises(ValueError, match="needs PostgreSQL"):
            async with service_factory(storage_backend="database", workers=0):
                pass
        return
    async with service_factory(storage_backend="database", workers=0) as service:
        storage = DatabaseStorage(service.db)
        await storage.put("a/b", b"one")
        await storage.put("a/b", b"two")  # replaces
        assert await storage.get("a/b") == b"two"
        assert await storage.exists("a/b")
        await storage.delete("a/b")
        assert not await storage.exists("a/b")
        with pytest.raises(FileNotFoundError):
            await storage.get("a/b")
        with pytest.raises(ValueError, match="invalid storage key"):
            await storage.put("../etc/passwd", b"x")
        async with service.db.session() as session:
            assert await session.scalar(select(func.count()).select_from(FileBlob)) == 0
