"""The scaled-out layout end to end, as real processes: nginx → 2 APIs → RabbitMQ → 2 workers, on a
PostgreSQL database and a RabbitMQ vhost of this test run's own."""

from __future__ import annotations

import asyncio
import collections
import io
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from deploy.local import DEFAULT_NGINX_TEMPLATE, LocalDeployment, render_nginx_conf

from tests.conftest import BACKENDS, BROKER, PASSWORD, PG_SERVER

MODEL = "image-classification"
PRICE = 5  # the classifier's default price
USERS = 20
JOBS_PER_USER = 10
TOP_UP = 100
SIGNUP_BONUS = 100
TERMINAL = {"succeeded", "failed", "canceled"}

pytestmark = pytest.mark.skipif(
    "postgresql" not in BACKENDS, reason="several processes share one database: PostgreSQL only"
)


@pytest.fixture
async def deployment(
    pg_database: str, amqp_vhost: str, model_cache: Path, tmp_path: Path
) -> AsyncIterator[LocalDeployment]:
    local = LocalDeployment(
        f"postgresql+asyncpg://{PG_SERVER}/{pg_database}",
        f"amqp://{BROKER}/{amqp_vhost}",
        tmp_path / "var",
        api_count=2,
        worker_count=2,
        models=[MODEL],
        extra_env={
            "MLSERVICE_MODEL_CACHE_DIR": str(model_cache),
            # Two workers on two cores: one inference thread each instead of both fighting for all.
            "MLSERVICE_INFERENCE_THREADS": "1",
            # A model is loaded on a worker's first batch, which its /ready says: how we know both ran jobs.
            "MLSERVICE_PRELOAD_MODELS": "false",
            "MLSERVICE_SIGNUP_BONUS": str(SIGNUP_BONUS),
            # All the customers register from one address (loopback, through nginx).
            "MLSERVICE_RATE_LIMIT_REGISTER": f"{USERS}/minute",
        },
    )
    await asyncio.to_thread(local.start)
    try:
        yield local
    finally:
        await asyncio.to_thread(local.stop)


@pytest.fixture(scope="module")
def small_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.chelsea())
    image.thumbnail((256, 256))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class Customer:
    """One user with an HTTP client of its own. Like any careful client it retries a 5xx, with the
    same Idempotency-Key for POSTs, so a retried request takes effect at most once; the 5xx are
    kept in ``server_errors`` and reported."""

    def __init__(self, client: httpx.AsyncClient, server_errors: list[str]) -> None:
        self.client = client
        self.server_errors = server_errors
        self.headers: dict[str, str] = {}

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self.headers | kwargs.pop("headers", {})
        for attempt in range(4):
            r = await self.client.request(method, url, headers=headers, **kwargs)
            if r.status_code < 500:
                return r
            self.server_errors.append(f"{method} {url} -> {r.status_code} {r.text[:120]}")
            await asyncio.sleep(0.2 * (attempt + 1))
        return r


async def run_customer(
    base_url: str, n: int, jpeg: bytes, deadline: float, server_errors: list[str]
) -> dict[str, Any]:
    """Register, log in, top up, submit jobs, poll until all are finished, read the ledger."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        customer = Customer(client, server_errors)
        email = f"customer-{n}-{uuid.uuid4().hex[:8]}@example.com"
        r = await customer.request("POST", "/api/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = await customer.request(
            "POST", "/api/auth/jwt/login", data={"username": email, "password": PASSWORD}
        )
        assert r.status_code == 200, r.text
        customer.headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = await customer.request(
            "POST", "/api/wallet/refill", json={"amount": TOP_UP}, headers={"Idempotency-Key": f"top-up-{n}"}
        )
        assert r.status_code == 200, r.text

        job_ids: list[str] = []
        for i in range(JOBS_PER_USER):
            r = await customer.request(
                "POST",
                "/api/jobs",
                data={"model": MODEL, "params": '{"top_k": 3}'},
                files={"file": ("cat.jpg", jpeg, "image/jpeg")},
                headers={"Idempotency-Key": f"job-{n}-{i}"},
            )
            assert r.status_code == 201, r.text
            job_ids.append(r.json()["id"])

        # One listing per poll rather than one request per job.
        while True:
            r = await customer.request("GET", "/api/jobs", params={"limit": 50})
            assert r.status_code == 200, r.text
            statuses = {item["id"]: item["status"] for item in r.json()["items"]}
            if all(statuses.get(job_id) in TERMINAL for job_id in job_ids):
                break
            assert time.monotonic() < deadline, f"customer {n}: jobs still unfinished: {statuses}"
            await asyncio.sleep(0.25)
        finished_at = time.monotonic()

        jobs = []
        for job_id in job_ids:
            r = await customer.request("GET", f"/api/jobs/{job_id}")
            assert r.status_code == 200, r.text
            jobs.append(r.json())
        r = await customer.request("GET", "/api/wallet")
        assert r.status_code == 200, r.text
        wallet = r.json()
        r = await customer.request("GET", "/api/wallet/transactions", params={"limit": 200})
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["total"] == len(page["items"])
        return {"jobs": jobs, "wallet": wallet, "entries": page["items"], "finished_at": finished_at}


async def test_two_apis_two_workers_behind_nginx(deployment: LocalDeployment, small_jpeg: bytes) -> None:
    server_errors: list[str] = []
    started = time.monotonic()
    results = await asyncio.gather(
        *(run_customer(deployment.url, n, small_jpeg, started + 90, server_errors) for n in range(USERS))
    )
    elapsed = max(r["finished_at"] for r in results) - started
    total = USERS * JOBS_PER_USER
    print(f"\n{total} jobs through nginx, 2 APIs, 2 workers in {elapsed:.1f} s: {total / elapsed:.1f} jobs/s")

    # Every job succeeded and classified the cat (ImageNet 281-285 are cats).
    jobs = [job for r in results for job in r["jobs"]]
    assert len({job["id"] for job in jobs}) == total
    assert collections.Counter(job["status"] for job in jobs) == {"succeeded": total}, [
        (job["id"], job["error"]) for job in jobs if job["status"] != "succeeded"
    ]
    assert all(job["output"]["predictions"][0]["class_id"] in range(281, 286) for job in jobs)

    # Through the API: each job captured exactly once, the ledger sums to the balance, nothing held.
    for r in results:
        entries, wallet = r["entries"], r["wallet"]
        own = {job["id"] for job in r["jobs"]}
        captures = collections.Counter(e["job_id"] for e in entries if e["type"] == "capture")
        assert captures == dict.fromkeys(own, 1)
        assert not [e for e in entries if e["type"] == "release"]
        assert sum(e["amount"] for e in entries) == wallet["balance"]
        assert sum(e["held_delta"] for e in entries) == wallet["held"] == 0
        assert wallet["balance"] == SIGNUP_BONUS + TOP_UP - JOBS_PER_USER * PRICE

    # The same straight from the database.
    conn = await asyncpg.connect(deployment.database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT j.id, count(l.id) AS captures FROM jobs j "
            "LEFT JOIN ledger_entries l ON l.job_id = j.id AND l.type = 'capture' GROUP BY j.id"
        )
        assert len(rows) == total
        assert {row["captures"] for row in rows} == {1}
        wallets = await conn.fetch(
            "SELECT w.balance, w.held, sum(l.amount) AS amounts, sum(l.held_delta) AS held_deltas "
            "FROM wallets w JOIN ledger_entries l ON l.user_id = w.user_id GROUP BY w.user_id"
        )
        assert len(wallets) == USERS
        assert all(w["balance"] == w["amounts"] and w["held"] == w["held_deltas"] == 0 for w in wallets)
        assert await conn.fetchval("SELECT count(*) FROM holds WHERE status <> 'captured'") == 0
    finally:
        await conn.close()

    # nginx spread the requests over both API processes...
    upstreams = collections.Counter(
        re.findall(r" upstream=(\S+) ", deployment.nginx_access_log.read_text(encoding="utf-8"))
    )
    api_addresses = {f"127.0.0.1:{port}" for port in deployment.api_ports}
    assert set(upstreams) == api_addresses, upstreams
    requests = sum(upstreams.values())
    assert all(upstreams[a] > requests / 5 for a in api_addresses), upstreams

    # ...and both workers ran jobs: a worker loads the model on the first batch it claims.
    for i, worker in enumerate(deployment.worker_procs):
        assert worker is not None
        assert worker.running, worker.tail()
        readiness = await asyncio.to_thread(deployment.worker_readiness, i)
        assert readiness["models"][MODEL] == "loaded", (readiness, worker.tail())
    for api in deployment.api_procs:
        assert api.running, api.tail()

    # /metrics is for the scraper on this machine, never for clients through nginx.
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{deployment.url}/metrics")).status_code == 404
        direct = await client.get(f"{deployment.api_urls[0]}/metrics")
        assert direct.status_code == 200
        assert "mlservice_http_requests" in direct.text
    logs = "".join(w.output() for w in deployment.worker_procs if w is not None)
    swept = sum(int(n) for n in re.findall(r"swept (\d+) jobs", logs))
    deadlocks = len(re.findall(r"DeadlockDetectedError|hit .*deadlock", logs))
    print(
        f"deadlocks in worker logs: {deadlocks}, jobs swept after their lease: {swept}, "
        f"5xx answers retried: {len(server_errors)}"
    )
    # Workers settle jobs of the same users in one lock order: no deadlock, nothing waits for a lease.
    assert (deadlocks, swept, server_errors) == (0, 0, [])


def test_nginx_config_is_rendered_from_the_compose_one(tmp_path: Path) -> None:
    template = DEFAULT_NGINX_TEMPLATE.read_text(encoding="utf-8")
    rendered = render_nginx_conf(
        template, listen="127.0.0.1:18080", upstreams=["127.0.0.1:18001", "127.0.0.1:18002"], prefix=tmp_path
    )
    upstream = re.search(r"upstream mlservice_api \{(.*?)\n\s*\}", rendered, re.DOTALL)
    assert upstream is not None
    servers = re.findall(r"^\s*server (\S+) (.*);$", upstream.group(1), re.MULTILINE)
    assert [s[0] for s in servers] == ["127.0.0.1:18001", "127.0.0.1:18002"]
    assert all("max_fails" in s[1] for s in servers)
    assert "api-1:8000" not in rendered
    assert re.findall(r"^\s*listen (\S+);", rendered, re.MULTILINE) == ["127.0.0.1:18080"]
    assert f'client_body_temp_path "{tmp_path / "temp" / "client_body"}";' in rendered
    # Everything else is the compose deployment's config, line for line.
    changed = set(rendered.splitlines()) ^ set(template.splitlines())
    assert all(re.search(r"server |listen |_temp_path |deploy\.local|^\s*$", line) for line in changed), (
        changed
    )
