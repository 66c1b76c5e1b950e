"""Job inputs and artifacts stored in PostgreSQL (MLSERVICE_STORAGE_BACKEND=database), and a job's
input rolled back with it when its submit transaction fails."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mlservice.history.tables import PredictionRequest
from mlservice.idempotency import service as idempotency
from mlservice.jobs.tables import Job
from mlservice.storage.database import DatabaseStorage
from mlservice.storage.tables import FileBlob
from mlservice.wallet.tables import Hold, Wallet
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import ledger_totals, wallet
from tests.fixtures.predictors import FileEcho


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


@pytest.mark.parametrize("storage_backend", ["local", "database"])
async def test_a_submission_failing_after_its_rows_are_written_commits_nothing(
    service_factory: Any, backend: str, storage_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if storage_backend == "database" and backend != "postgresql":
        pytest.skip("database storage is for PostgreSQL deployments; SQLite uses local files")
    written: dict[str, Any] = {}
    real_complete = idempotency.complete

    async def complete_then_fail(session: AsyncSession, record: Any, status_code: int, body: Any) -> None:
        """The last write of a submit with an Idempotency-Key (a transaction on every database);
        here it fails once the rest is written."""
        await real_complete(session, record, status_code, body)
        job = await session.get(Job, uuid.UUID(body["id"]))
        assert job is not None
        assert job.input_file is not None
        hold = await session.scalar(select(Hold).where(Hold.job_id == job.id))
        account = await session.get(Wallet, job.user_id, populate_existing=True)
        assert hold is not None
        assert account is not None
        written.update(
            job=job.status,
            hold=(hold.amount, hold.status),
            held=account.held,
            input=await storage.exists(job.input_file, session=session),
            request=await session.scalar(
                select(func.count()).select_from(PredictionRequest).where(PredictionRequest.job_id == job.id)
            ),
            key=job.input_file,
        )
        raise RuntimeError("the disk filled up")

    async with service_factory([FileEcho], workers=0, storage_backend=storage_backend) as service:
        storage = service.app.state.components.storage
        headers = await service.user()
        monkeypatch.setattr(idempotency, "complete", complete_then_fail)
        with pytest.raises(RuntimeError, match="the disk filled up"):
            await service.client.post(
                "/api/jobs",
                data={"model": FileEcho.slug},
                files={"file": ("a.bin", b"abc")},
                headers=headers | {"Idempotency-Key": "k"},
            )
        # The failure came after the job, its hold, its history row and its input were written in
        # the transaction...
        price = FileEcho.default_price
        key = written.pop("key")
        assert written == {
            "job": "queued",
            "hold": (price, "open"),
            "held": price,
            "input": True,
            "request": 1,
        }
        # ...and none of it was committed: no job, no hold, the balance untouched, no stored input.
        async with service.db.session() as session:
            assert await session.scalar(select(func.count()).select_from(Job)) == 0
            assert await session.scalar(select(func.count()).select_from(Hold)) == 0
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        assert await ledger_totals(service, headers) == (100, 0, 1)  # the signup bonus only
        assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 0
        assert not await storage.exists(key)
        if storage_backend == "database":
            assert await stored_keys(service) == []


@pytest.mark.parametrize("storage_backend", ["local", "database"])
async def test_a_refused_upload_leaves_no_stored_input(
    service_factory: Any, backend: str, storage_backend: str
) -> None:
    """The input is stored before the job's statement (the last of its unit of work, which on
    PostgreSQL with local files is the only one, run without a transaction); a refusal by that
    statement removes it again."""
    if storage_backend == "database" and backend != "postgresql":
        pytest.skip("database storage is for PostgreSQL deployments; SQLite uses local files")
    async with service_factory([FileEcho], workers=0, storage_backend=storage_backend) as service:
        headers, admin = await service.user(), await service.admin()
        await service.client.patch(f"/api/admin/models/{FileEcho.slug}", json={"price": 101}, headers=admin)
        r = await service.client.post(
            "/api/jobs", data={"model": FileEcho.slug}, files={"file": ("a.bin", b"abc")}, headers=headers
        )
        assert r.status_code == 402, r.text
        assert r.json()["error"]["details"] == {"price": 101, "available": 100}
        assert await ledger_totals(service, headers) == (100, 0, 1)
        if storage_backend == "database":
            assert await stored_keys(service) == []
        else:
            files = service.settings.resolved_storage_dir
            assert [p for p in files.rglob("*") if p.is_file()] == []


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
