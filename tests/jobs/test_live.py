"""Live jobs: a running job canceled at once (its hold released once, its output dropped, its
predictor stopped), deadlines (``Cancel-After``), progress and the predictor's log lines."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mlservice.jobs.live import capture_logs, install_log_capture
from tests.conftest import Service
from tests.fixtures.api import ledger_totals, submit, wallet
from tests.fixtures.predictors import SteppingEcho

FINISHED = {"succeeded", "failed", "canceled", "aborted"}


async def _until(
    service: Service, headers: dict[str, str], job_id: str, check: Any, within: float = 30
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        job = (await service.client.get(f"/api/jobs/{job_id}", headers=headers)).json()
        if check(job):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} is {job}")
        await asyncio.sleep(0.02)


async def _steps(service: Service, headers: dict[str, str], text: str, **fields: Any) -> dict[str, Any]:
    params = fields.pop("params", '{"steps": 200, "step_ms": 25}')
    r = await submit(service, headers, text, model=SteppingEcho.slug, params=params, **fields)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_a_running_job_is_canceled_at_once_and_its_predictor_stops(service_factory: Any) -> None:
    async with service_factory([SteppingEcho]) as service:
        headers = await service.user()
        job = await _steps(service, headers, "long one")
        running = await _until(
            service, headers, job["id"], lambda j: j["status"] == "running" and j["progress"] is not None
        )
        assert 0 < running["progress"]["fraction"] < 1
        assert running["progress"]["message"].startswith("step ")

        r = await service.client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled"
        # Released at once, while the predictor may still be on its step.
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}

        # The predictor stops at its next step, far from its 200.
        for _ in range(200):
            await asyncio.sleep(0.025)
            if not service.app.state.components.workers.executor.running:
                break
        assert not service.app.state.components.workers.executor.running
        assert SteppingEcho.ran["long one"] < 100

        done = (await service.client.get(f"/api/jobs/{job['id']}", headers=headers)).json()
        assert done["status"] == "canceled"
        assert done["output"] is None
        # The bonus, one hold, one release: nothing captured, nothing released twice.
        assert await ledger_totals(service, headers) == (100, 0, 3)
        again = await service.client.post(f"/api/jobs/{job['id']}/cancel", headers=headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "job_not_cancelable"
        assert await ledger_totals(service, headers) == (100, 0, 3)


async def test_progress_and_log_lines_are_kept_with_the_job(service_factory: Any) -> None:
    async with service_factory([SteppingEcho]) as service:
        headers = await service.user()
        job = await _steps(service, headers, "short", params='{"steps": 3, "step_ms": 10}')
        done = await _until(service, headers, job["id"], lambda j: j["status"] in FINISHED)
        assert done["status"] == "succeeded", done
        assert done["logs"].splitlines() == [f"finished step {n} of 3" for n in (1, 2, 3)]
        assert done["cost"] == 3
        assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}


async def test_a_queued_job_past_its_deadline_is_aborted_and_costs_nothing(service_factory: Any) -> None:
    async with service_factory([SteppingEcho], workers=0) as service:
        headers = await service.user()
        r = await service.client.post(
            "/api/jobs",
            data={"model": SteppingEcho.slug, "text": "late"},
            headers={**headers, "Cancel-After": "1s"},
        )
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["cancel_at"] is not None
    # A worker starts after the deadline: it does not run the job; its sweep aborts it.
    await asyncio.sleep(1.1)
    async with service_factory([SteppingEcho], sweep_interval_seconds=0.2) as service:
        done = await _until(service, headers, job["id"], lambda j: j["status"] in FINISHED)
        assert done["status"] == "aborted"
        assert done["started_at"] is None
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        assert "late" not in SteppingEcho.ran


async def test_a_running_job_past_its_deadline_is_canceled(service_factory: Any) -> None:
    async with service_factory([SteppingEcho]) as service:
        headers = await service.user()
        r = await service.client.post(
            "/api/jobs",
            data={"model": SteppingEcho.slug, "text": "deadline", "params": '{"steps": 400, "step_ms": 25}'},
            headers={**headers, "Cancel-After": "1.5s"},
        )
        assert r.status_code == 201, r.text
        done = await _until(service, headers, r.json()["id"], lambda j: j["status"] in FINISHED)
        assert done["status"] == "canceled"
        assert done["started_at"] is not None
        assert SteppingEcho.ran["deadline"] < 200
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}


@pytest.mark.parametrize("value", ["soon", "0s", "-5", "8d", "5x", "1m 2s"])
async def test_a_malformed_deadline_is_refused_before_anything_is_held(service: Service, value: str) -> None:
    headers = await service.user()
    r = await service.client.post(
        "/api/jobs", data={"model": "test-echo", "text": "x"}, headers={**headers, "Cancel-After": value}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_cancel_after"
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}


def test_log_lines_are_kept_for_a_job_run_alone_only() -> None:
    # A line logged while a batch of several jobs runs could be any of them's (of other owners
    # perhaps): none of them gets it.
    log = logging.getLogger("mlservice.predictors.tests")
    install_log_capture()  # as every executor does
    with capture_logs(1) as alone:
        log.info("the file is 12 bytes")
    with capture_logs(2) as batch:
        log.info("the file is 13 bytes")
    log.info("outside any job")
    assert alone == [["the file is 12 bytes"]]
    assert batch == [[], []]
