"""X-Request-ID: taken when valid, made when absent or invalid, returned, stored on the job and
carried by the job's log events in the worker."""

from __future__ import annotations

import logging
import re
import uuid

import pytest
from sqlalchemy import select

from mlservice.jobs.tables import Job
from tests.conftest import Service, wait_for_job
from tests.observability.conftest import submit_echo

GENERATED = re.compile(r"[0-9a-f]{32}")


async def test_request_id_is_echoed(service: Service) -> None:
    r = await service.client.get("/health", headers={"X-Request-ID": "edge-42.a_B"})
    assert r.headers["X-Request-ID"] == "edge-42.a_B"
    longest = "r" * 64
    r = await service.client.get("/health", headers={"X-Request-ID": longest})
    assert r.headers["X-Request-ID"] == longest


async def test_request_id_is_generated_when_absent(service: Service) -> None:
    first = (await service.client.get("/health")).headers["X-Request-ID"]
    second = (await service.client.get("/api/nothing")).headers["X-Request-ID"]
    assert GENERATED.fullmatch(first)
    assert GENERATED.fullmatch(second)
    assert first != second


@pytest.mark.parametrize("sent", ["r" * 65, "has space", "semi;colon", "<script>", "a,b", "x/y", ""])
async def test_invalid_request_id_is_replaced(service: Service, sent: str) -> None:
    r = await service.client.get("/health", headers={"X-Request-ID": sent})
    assert GENERATED.fullmatch(r.headers["X-Request-ID"])


async def test_request_id_follows_the_job(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mlservice")
    headers = await service.user()
    request_id = f"submit-{uuid.uuid4().hex[:8]}"
    r = await submit_echo(service, headers, "follow me", request_id=request_id)
    assert r.status_code == 201, r.text
    assert r.headers["X-Request-ID"] == request_id
    job_id = r.json()["id"]
    assert (await wait_for_job(service.client, headers, job_id))["status"] == "succeeded"

    async with service.db.session() as session:
        stored = await session.scalar(select(Job.request_id).where(Job.id == uuid.UUID(job_id)))
    assert stored == request_id

    # Polling the job makes requests of its own; the job's events keep the submit's id.
    for _ in range(100):
        events = {r.getMessage(): r for r in caplog.records if getattr(r, "job_id", None) == job_id}
        if "job.succeeded" in events:
            break
        await wait_for_job(service.client, headers, job_id)
    assert {"job.queued", "job.running", "job.succeeded"} <= set(events)
    user_id = (await service.client.get("/api/users/me", headers=headers)).json()["id"]
    for name in ("job.queued", "job.running", "job.succeeded"):
        record = events[name]
        assert record.request_id == request_id, name  # type: ignore[attr-defined]
        assert record.model == "test-echo"  # type: ignore[attr-defined]
        assert record.user_id == user_id  # type: ignore[attr-defined]
    running, succeeded = events["job.running"], events["job.succeeded"]
    assert running.attempt == 1  # type: ignore[attr-defined]
    assert running.queued_ms >= 0  # type: ignore[attr-defined]
    assert succeeded.processing_ms >= 0  # type: ignore[attr-defined]
    assert succeeded.total_ms >= succeeded.processing_ms  # type: ignore[attr-defined]
    assert succeeded.cost == 3  # type: ignore[attr-defined]

    # The submit's own request event, with the user it was made by.
    submits = [
        r
        for r in caplog.records
        if r.getMessage() == "http.request" and getattr(r, "request_id", None) == request_id
    ]
    assert len(submits) == 1
    event = submits[0]
    assert (event.method, event.route, event.status) == ("POST", "/api/jobs", 201)  # type: ignore[attr-defined]
    assert event.user_id == user_id  # type: ignore[attr-defined]
    assert event.duration_ms > 0  # type: ignore[attr-defined]


async def test_generated_request_id_is_stored_on_the_job(service: Service) -> None:
    headers = await service.user()
    r = await submit_echo(service, headers, "plain")
    job_id = r.json()["id"]
    async with service.db.session() as session:
        stored = await session.scalar(select(Job.request_id).where(Job.id == uuid.UUID(job_id)))
    assert stored == r.headers["X-Request-ID"]
    assert GENERATED.fullmatch(stored)
