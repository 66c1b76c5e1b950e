"""Live jobs in the scaled-out layout, as real processes: nginx → 2 APIs → RabbitMQ → 1 worker on
PostgreSQL. A job's event stream, read through nginx from either API, carries the progress the
worker (another process) reports as it goes, unbuffered; a cancel sent to either API stops the
running job in the worker and releases its hold."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from deploy.local import LocalDeployment

from tests.conftest import BACKENDS, BROKER, PASSWORD, PG_SERVER, ROOT
from tests.fixtures.live_server import STEPS_PLUGIN, install_echo_plugin, unique_email

SIGNUP_BONUS = 100

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="several processes share one database: PostgreSQL only"
)


@pytest.fixture
async def deployment(
    pg_database: str, amqp_vhost: str, model_cache: Path, tmp_path: Path
) -> AsyncIterator[LocalDeployment]:
    # test-steps (a job in steps that reports its progress) reaches the APIs and the worker as an
    # installed model package would: an entry point on PYTHONPATH.
    plugins = install_echo_plugin(tmp_path / "plugins", STEPS_PLUGIN)
    python_path = [str(plugins), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    local = LocalDeployment(
        f"postgresql+asyncpg://{PG_SERVER}/{pg_database}",
        f"amqp://{BROKER}/{amqp_vhost}",
        tmp_path / "var",
        api_count=2,
        worker_count=1,
        models=["test-steps"],
        extra_env={
            "PYTHONPATH": os.pathsep.join(python_path),
            "MLSERVICE_MODEL_CACHE_DIR": str(model_cache),
            "MLSERVICE_INFERENCE_THREADS": "1",
            "MLSERVICE_SIGNUP_BONUS": str(SIGNUP_BONUS),
        },
    )
    await asyncio.to_thread(local.start)
    try:
        yield local
    finally:
        await asyncio.to_thread(local.stop)


async def events_of(client: httpx.AsyncClient, job_id: str) -> AsyncIterator[tuple[float, dict[str, Any]]]:
    """The job states its stream sends (with when each came), until the stream ends."""
    async with client.stream("GET", f"/api/jobs/{job_id}/events", timeout=60) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                yield time.monotonic(), json.loads(line.removeprefix("data:").strip())


async def test_progress_streams_through_nginx_and_a_cancel_stops_the_worker(
    deployment: LocalDeployment,
) -> None:
    async with httpx.AsyncClient(base_url=deployment.url, timeout=30) as client:
        email = unique_email()
        r = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = await client.post("/api/auth/jwt/login", data={"username": email, "password": PASSWORD})
        client.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        price = (await client.get("/api/models/test-steps")).json()["price"]

        async def submit(text: str, steps: int, step_ms: int) -> str:
            params = json.dumps({"steps": steps, "step_ms": step_ms})
            r = await client.post("/api/jobs", data={"model": "test-steps", "text": text, "params": params})
            assert r.status_code == 201, r.text
            return str(r.json()["id"])

        # A job of 10 steps of 300 ms: its stream shows the worker's progress as it happens.
        job = await submit("through nginx", 10, 300)
        seen = [event async for event in events_of(client, job)]
        states = [state for _, state in seen]
        assert states[-1]["status"] == "succeeded", states[-1]
        assert states[-1]["output"] == {"echo": "THROUGH NGINX", "steps": 10}
        fractions = [s["progress"]["fraction"] for s in states if s["status"] == "running" and s["progress"]]
        assert len(fractions) >= 3, states
        assert fractions == sorted(fractions), fractions
        assert 0 < fractions[0] < fractions[-1] < 1, fractions
        # Unbuffered: the first progress came well before the end, not all at once when it ended.
        first_progress = next(at for at, s in seen if s["status"] == "running" and s["progress"])
        timeline = [(round(at - seen[0][0], 2), s["status"]) for at, s in seen]
        assert seen[-1][0] - first_progress > 1.0, timeline

        # A long job canceled while it runs: the stream ends with it, the worker moves on.
        long = await submit("cancel me", 400, 50)
        stream = events_of(client, long)
        async for _, state in stream:
            if state["status"] == "running" and state["progress"]:
                r = await client.post(f"/api/jobs/{long}/cancel")
                assert r.status_code == 200, r.text
                assert r.json()["status"] == "canceled"
                break
        rest = [state async for _, state in stream]
        assert rest, "the stream ended without the final state"
        assert rest[-1]["status"] == "canceled"
        canceled_at = time.monotonic()
        # The worker stops the canceled run (it would take 20 s more) and takes the next job.
        after = await submit("next", 1, 0)
        final = [state async for _, state in events_of(client, after)][-1]
        assert final["status"] == "succeeded", final
        assert time.monotonic() - canceled_at < 10
        stopped = (await client.get(f"/api/jobs/{long}")).json()
        assert stopped["status"] == "canceled"
        assert stopped["progress"]["fraction"] < 0.5, stopped["progress"]

        wallet = (await client.get("/api/wallet")).json()
        assert wallet == {**wallet, "balance": SIGNUP_BONUS - 2 * price, "held": 0}
