"""A finished job's files expire (local and database storage) while the job, its result and its
money stay: the API answers 410 files_expired for them and says so in the job, /v1 marks the
prediction's data removed, the web page shows "files expired" instead of broken links, and the
setting 0 keeps the files forever."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mlservice.jobs import repository as jobs_repository
from mlservice.jobs.tables import Job
from mlservice.storage.local import LocalStorage
from mlservice.types import utcnow
from tests.conftest import Service
from tests.fixtures.api import ledger_totals, wallet
from tests.fixtures.predictors import EchoText, FileEcho
from tests.fixtures.web import browser
from tests.replicate.conftest import create
from tests.replicate.test_predictions import assert_problem
from tests.retention.conftest import finish_at, finished_job, removed_metric, storage_of, sweeper_of

KEPT = timedelta(days=30)
SECOND = timedelta(seconds=1)


def file_keys(job: dict[str, Any]) -> list[str]:
    keys = [f"jobs/{job['id']}/artifacts/{a['name']}" for a in job["artifacts"]]
    return keys + ([f"jobs/{job['id']}/input"] if job["model"] == FileEcho.slug else [])


async def money(service: Service, headers: dict[str, str]) -> tuple[Any, ...]:
    async with service.db.session() as session:
        jobs = (await session.execute(select(Job.id, Job.status, Job.cost).order_by(Job.id))).all()
    return await wallet(service, headers), await ledger_totals(service, headers), jobs


@pytest.mark.parametrize("storage_backend", ["local", "database"])
async def test_expired_job_files_go_and_the_job_and_its_money_stay(
    service_factory: Any, backend: str, storage_backend: str
) -> None:
    if storage_backend == "database" and backend != "postgresql":
        pytest.skip("database storage is for PostgreSQL deployments; SQLite uses local files")
    async with service_factory(predictors=[EchoText, FileEcho], storage_backend=storage_backend) as service:
        email = f"user-{uuid.uuid4().hex[:10]}@example.com"
        headers = await service.user(email)
        upload = {"file": ("in.bin", b"some bytes", "application/octet-stream")}
        old_file = await finished_job(service, headers, model=FileEcho.slug, files=upload)
        old_text = await finished_job(service, headers)
        young = await finished_job(service, headers, model=FileEcho.slug, files=upload)
        now = utcnow()
        for job in (old_file, old_text):
            await finish_at(service, job["id"], now - KEPT - SECOND)
        await finish_at(service, young["id"], now - KEPT + timedelta(minutes=1))
        storage = storage_of(service)
        for job in (old_file, old_text, young):
            for key in file_keys(job):
                assert await storage.exists(key), key
        before = await money(service, headers)

        removed = await sweeper_of(service).sweep_once(now=now)

        assert removed["job_files"] == 3  # the file job's input and copy, the text job's echo
        assert removed_metric(service)["job_files"] == 3
        for job in (old_file, old_text):
            for key in file_keys(job):
                assert not await storage.exists(key), key
        for key in file_keys(young):
            assert await storage.get(key) == b"some bytes"
        if isinstance(storage, LocalStorage):
            # No empty directory is left behind for each expired job.
            assert not (storage.root / "jobs" / old_file["id"]).exists()
        assert await money(service, headers) == before  # ledger, balances, job cost and status

        # The API: the job says its files expired, everything else as it was; the files are 410.
        for job in (old_file, old_text):
            r = await service.client.get(f"/api/jobs/{job['id']}", headers=headers)
            now_job = r.json()
            assert now_job["files_expired_at"] is not None
            aged = {"files_expired_at", "finished_at"}
            assert {k: v for k, v in now_job.items() if k not in aged} == {
                k: v for k, v in job.items() if k not in aged
            }
            for artifact in job["artifacts"]:
                gone = await service.client.get(artifact["url"], headers=headers)
                assert gone.status_code == 410, gone.text
                assert gone.json()["error"]["code"] == "files_expired"
        gone = await service.client.get(f"/api/jobs/{old_file['id']}/input", headers=headers)
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "files_expired"
        # A name the job never had is still not found; another user's job is still not theirs.
        missing = await service.client.get(f"/api/jobs/{old_file['id']}/artifacts/nope", headers=headers)
        assert missing.status_code == 404
        other = await service.user()
        assert (
            await service.client.get(f"/api/jobs/{old_file['id']}/input", headers=other)
        ).status_code == 404
        young_job = (await service.client.get(f"/api/jobs/{young['id']}", headers=headers)).json()
        assert young_job["files_expired_at"] is None
        assert (await service.client.get(f"/api/jobs/{young['id']}/input", headers=headers)).content == (
            b"some bytes"
        )

        # /v1: the prediction's data is removed, and its file URL is no longer an input.
        prediction = (await service.client.get(f"/v1/predictions/{old_file['id']}", headers=headers)).json()
        assert prediction["data_removed"] is True
        assert prediction["output"]["bytes"] == 10
        kept = (await service.client.get(f"/v1/predictions/{young['id']}", headers=headers)).json()
        assert kept["data_removed"] is False
        again = await create(service, headers, FileEcho.slug, {"file": f"/api/jobs/{old_file['id']}/input"})
        assert_problem(again, 422, "files_expired")

        # The web page says so instead of linking to files that are gone.
        async with browser(service, email) as client:
            page = (await client.get(f"/jobs/{old_file['id']}")).text
            assert 'data-testid="files-expired"' in page
            assert "Files expired" in page
            assert f"/api/jobs/{old_file['id']}/artifacts/copy" not in page
            assert "Download copy.bin" in (await client.get(f"/jobs/{young['id']}")).text

        # Done once: the next sweep finds nothing to do.
        assert (await sweeper_of(service).sweep_once(now=now))["job_files"] == 0


async def test_unfinished_jobs_keep_their_files(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText, FileEcho], workers=1) as service:
        headers = await service.user()
        job = await finished_job(service, headers)
        # As if it were running still: no finished_at, whatever its age.
        await finish_at(service, job["id"], None)
        assert (await sweeper_of(service).sweep_once(now=utcnow() + 10 * KEPT))["job_files"] == 0
        assert await storage_of(service).exists(f"jobs/{job['id']}/artifacts/echo")


async def test_zero_keeps_job_files_forever(service_factory: Any) -> None:
    async with service_factory(retention_job_files_days=0) as service:
        headers = await service.user()
        job = await finished_job(service, headers)
        removed = await sweeper_of(service).sweep_once(now=utcnow() + timedelta(days=3650))
        assert removed["job_files"] == 0
        r = await service.client.get(f"/api/jobs/{job['id']}/artifacts/echo", headers=headers)
        assert r.status_code == 200
        assert r.content == b"hello"
        assert (await service.client.get(f"/api/jobs/{job['id']}", headers=headers)).json()[
            "files_expired_at"
        ] is None


async def test_job_files_go_in_batches(service_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    real = jobs_repository.expire_files

    async def recorded(*args: Any, **kwargs: Any) -> Any:
        marked = await real(*args, **kwargs)
        batches.append(len(marked))
        return marked

    monkeypatch.setattr(jobs_repository, "expire_files", recorded)
    async with service_factory(retention_batch_size=3) as service:
        headers = await service.user()
        made = [await finished_job(service, headers, text=f"t{n}") for n in range(4)]
        for job in made:
            await finish_at(service, job["id"], utcnow() - KEPT - SECOND)
        removed = await sweeper_of(service).sweep_once()
        assert removed["job_files"] == 4
        assert batches == [3, 1]
        for job in made:
            assert not await storage_of(service).exists(f"jobs/{job['id']}/artifacts/echo")
