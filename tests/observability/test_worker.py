"""A real `mlservice worker` process: /metrics on its health port, JSON logs on stderr that carry
the request id of the HTTP request that submitted the job."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for_job
from tests.fixtures.predictors import EchoText
from tests.observability.conftest import parse_metrics, sample, submit_echo


@pytest.fixture(autouse=True)
def _postgresql_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("API and worker processes share a PostgreSQL database")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_worker_metrics_and_json_logs(service_factory: Any, worker_env: dict[str, str]) -> None:
    port = free_port()
    env = worker_env | {
        "MLSERVICE_LOG_FORMAT": "json",
        "MLSERVICE_LOG_LEVEL": "info",
        "MLSERVICE_WORKER_HEALTH_PORT": str(port),
    }
    # The worker starts once the app has migrated and seeded the database it reads its catalog from.
    async with service_factory(
        [EchoText], broker_url=worker_env["MLSERVICE_BROKER_URL"], workers=0
    ) as service:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fixtures.worker",
            "test-echo",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        stderr = asyncio.create_task(worker.stderr.read())  # type: ignore[union-attr]
        try:
            headers = await service.user()
            request_id = "across-processes-1"
            job_id = (await submit_echo(service, headers, "far away", request_id=request_id)).json()["id"]
            assert (await wait_for_job(service.client, headers, job_id))["status"] == "succeeded"

            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                for _ in range(100):
                    r = await client.get("/metrics")
                    s = parse_metrics(r.text)
                    if sample(s, "mlservice_jobs_finished_total", model="test-echo", status="succeeded"):
                        break
                    await asyncio.sleep(0.05)
            assert r.headers["content-type"].startswith("text/plain")
            assert sample(s, "mlservice_jobs_finished_total", model="test-echo", status="succeeded") == 1
            assert sample(s, "mlservice_credits_captured_total", model="test-echo") == 3
            assert sample(s, "mlservice_job_queue_seconds_count", model="test-echo") == 1
            assert sample(s, "mlservice_jobs_queued", model="test-echo") == 0
            assert sample(s, "mlservice_model_loaded", model="test-echo") == 1
            # The worker serves no HTTP API: no request series.
            assert not any(name.startswith("mlservice_http_") for name, _ in s)
        finally:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(worker.wait(), 30)
            lines = (await stderr).decode().splitlines()
            print("\n".join(lines[-60:]))  # shown by pytest when the test fails
        assert code == 0, "\n".join(lines[-40:])

    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    events = {e["event"]: e for e in entries if e.get("job_id") == job_id}
    assert {"job.running", "job.succeeded"} <= set(events)
    for name in ("job.running", "job.succeeded"):
        assert events[name]["request_id"] == request_id
        assert events[name]["model"] == "test-echo"
        assert events[name]["logger"] == "mlservice.jobs.events"
