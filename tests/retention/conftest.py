"""Helpers of the retention tests: the process's sweeper, its metrics, jobs aged on purpose."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from mlservice.jobs.tables import Job
from mlservice.retention.sweeper import RetentionSweeper
from mlservice.storage.base import Storage
from tests.conftest import Service, wait_for_job


def sweeper_of(service: Service) -> RetentionSweeper:
    sweeper = service.app.state.components.retention
    assert sweeper is not None, "a process that runs workers has a retention sweeper"
    return sweeper  # type: ignore[no-any-return]


def storage_of(service: Service) -> Storage:
    return service.app.state.components.storage  # type: ignore[no-any-return]


def removed_metric(service: Service) -> dict[str, float]:
    """``mlservice_retention_removed_total`` by kind, as /metrics would show it."""
    text = service.app.state.components.metrics.exposition().decode()
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mlservice_retention_removed_total"
    }


async def finished_job(service: Service, headers: dict[str, str], **form: Any) -> dict[str, Any]:
    """A job submitted through the API (``test-echo`` unless ``model`` says otherwise), finished."""
    files = form.pop("files", None)
    data = {"model": "test-echo", **({} if files else {"text": "hello"}), **form}
    r = await service.client.post("/api/jobs", data=data, files=files, headers=headers)
    assert r.status_code == 201, r.text
    job = await wait_for_job(service.client, headers, r.json()["id"])
    assert job["status"] == "succeeded", job
    return job


async def finish_at(service: Service, job_id: str | uuid.UUID, when: datetime | None) -> None:
    """Say the job finished at ``when`` (retention counts a job's files from then; None: it has
    not finished)."""
    async with service.db.session(write=True) as session:
        await session.execute(update(Job).where(Job.id == uuid.UUID(str(job_id))).values(finished_at=when))
