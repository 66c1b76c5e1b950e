"""Webhooks end to end: jobs with a webhook, a real receiver on loopback, both databases."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from mlservice.webhooks.tables import WebhookDelivery
from tests.conftest import Service, wait_for_job
from tests.fixtures.api import submit, wallet
from tests.webhooks.conftest import FAST, Receiver, deliveries, secret_of, settled, verify


async def delivery_count(service: Service) -> int:
    async with service.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(WebhookDelivery)) or 0)


async def test_start_then_completed_signed_and_in_order(service_factory: Any, receiver: Receiver) -> None:
    async with service_factory(**FAST) as service:
        headers = await service.user()
        r = await submit(service, headers, "hello", webhook=receiver.url("/ok"))
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
        plain = (await submit(service, headers, "no webhook")).json()["id"]
        done = await wait_for_job(service.client, headers, job_id)
        await wait_for_job(service.client, headers, plain)
        await receiver.wait_for(lambda: len(receiver.at("/ok")) == 2)

        start, completed = receiver.at("/ok")
        assert [start.event, completed.event] == ["start", "completed"]
        assert start.at <= completed.at
        # Each body is the job as GET /api/jobs/{id} showed it when the event happened.
        assert (start.json["id"], start.json["status"], start.json["output"]) == (job_id, "running", None)
        assert completed.json == done
        secret = await secret_of(service, headers)
        for request in (start, completed):
            verify(secret, request.headers, request.body)
            assert request.headers["content-type"] == "application/json"
            assert request.headers["host"] == f"127.0.0.1:{receiver.port}"

        rows = await settled(service, headers, job_id, 2)
        assert [(d["event"], d["status"], d["attempts"], d["last_status_code"]) for d in rows] == [
            ("start", "delivered", 1, 200),
            ("completed", "delivered", 1, 200),
        ]
        assert [str(d["id"]) for d in rows] == [start.headers["webhook-id"], completed.headers["webhook-id"]]
        assert all(
            d["delivered_at"] and d["next_attempt_at"] is None and d["last_error"] is None for d in rows
        )
        assert await deliveries(service, headers, plain) == []
        assert await delivery_count(service) == 2  # nothing at all for the job without a webhook


async def test_events_filter_is_respected(service_factory: Any, receiver: Receiver) -> None:
    async with service_factory(**FAST) as service:
        headers = await service.user()
        cases: list[tuple[str, Any, str, list[str]]] = [
            ("/ok/completed", "completed", "hi", ["completed"]),
            ("/ok/start", ["start"], "hi", ["start"]),
            ("/ok/both", ["start", "completed"], "hi", ["start", "completed"]),
            ("/ok/comma", " start , completed ", "hi", ["start", "completed"]),
            # Output arrives with completion: `output` alone is one `output` event on success...
            ("/ok/output", "output", "hi", ["output"]),
            # ... and nothing when the job fails.
            ("/ok/output-failed", "output", "boom", []),
            ("/ok/logs", "logs", "hi", []),  # models write no logs
        ]
        jobs = {}
        for path, events, text, _ in cases:
            r = await submit(service, headers, text, webhook=receiver.url(path), webhook_events_filter=events)
            assert r.status_code == 201, r.text
            jobs[path] = r.json()["id"]
        for path, _, _, expected in cases:
            await wait_for_job(service.client, headers, jobs[path])
            rows = await settled(service, headers, jobs[path], len(expected))
            assert [d["event"] for d in rows] == expected, path
            assert all(d["status"] == "delivered" for d in rows)
        await receiver.wait_for(lambda: len(receiver.requests) == 7)
        assert [r.event for r in receiver.at("/ok/output")] == ["output"]
        assert receiver.at("/ok/output")[0].json["output"]["echo"] == "HI"


async def test_failing_receiver_is_retried_until_delivered(service_factory: Any, receiver: Receiver) -> None:
    async with service_factory(**FAST) as service:
        headers = await service.user()
        job_id = (await submit(service, headers, webhook=receiver.url("/flaky/2"))).json()["id"]
        await wait_for_job(service.client, headers, job_id)
        rows = await settled(service, headers, job_id, 2)
        # The start is retried, and the completion waits for it: in order, each once delivered.
        assert [(r.event, r.status) for r in receiver.at("/flaky/2")] == [
            ("start", 500),
            ("start", 500),
            ("start", 200),
            ("completed", 200),
        ]
        assert [(d["event"], d["status"], d["attempts"], d["last_status_code"]) for d in rows] == [
            ("start", "delivered", 3, 200),
            ("completed", "delivered", 1, 200),
        ]
        first, second = receiver.at("/flaky/2")[:2]
        assert first.headers["webhook-id"] == second.headers["webhook-id"]  # for the receiver's dedup


async def test_receiver_always_down_is_given_up_and_the_job_is_unaffected(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(**FAST) as service:
        headers = await service.user()
        job_id = (
            await submit(service, headers, webhook=receiver.url("/down"), webhook_events_filter="completed")
        ).json()["id"]
        done = await wait_for_job(service.client, headers, job_id)
        (row,) = await settled(service, headers, job_id, 1)
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("failed", 3, 500)
        assert row["last_error"] == "HTTP 500"
        assert len(receiver.at("/down")) == 3
        assert done["status"] == "succeeded"
        assert done["output"]["echo"] == "HELLO"
        assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}


async def test_client_errors_and_redirects_are_given_up_at_once(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(**FAST) as service:
        headers = await service.user()
        ids = {}
        for path in ("/reject", "/redirect"):
            r = await submit(service, headers, webhook=receiver.url(path), webhook_events_filter="completed")
            ids[path] = r.json()["id"]
        (rejected,) = await settled(service, headers, ids["/reject"], 1)
        (redirected,) = await settled(service, headers, ids["/redirect"], 1)
        assert (rejected["status"], rejected["attempts"], rejected["last_status_code"]) == ("failed", 1, 400)
        assert (redirected["status"], redirected["attempts"]) == ("failed", 1)
        assert "redirects are not followed" in redirected["last_error"]
        assert receiver.at("/ok") == []


async def test_a_hanging_receiver_does_not_stall_other_deliveries(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(**FAST | {"webhook_timeout_seconds": 2, "webhook_max_attempts": 1}) as service:
        headers = await service.user()
        hanging = (
            await submit(service, headers, webhook=receiver.url("/hang"), webhook_events_filter="completed")
        ).json()["id"]
        await receiver.wait_for(lambda: len(receiver.at("/hang")) == 1)
        other = (
            await submit(service, headers, webhook=receiver.url("/ok"), webhook_events_filter="completed")
        ).json()["id"]
        await receiver.wait_for(lambda: len(receiver.at("/ok")) == 1, within=1.5)
        assert (await deliveries(service, headers, hanging))[0]["status"] == "pending"
        (ok,) = await settled(service, headers, other, 1)
        assert ok["status"] == "delivered"

        (timed_out,) = await settled(service, headers, hanging, 1, within=10)
        assert (timed_out["status"], timed_out["attempts"]) == ("failed", 1)
        assert timed_out["last_error"] == "no answer within 2 s"
        assert timed_out["last_status_code"] is None
        assert (await wait_for_job(service.client, headers, hanging))["status"] == "succeeded"


async def test_cancel_sends_completed_with_status_canceled(service_factory: Any, receiver: Receiver) -> None:
    async with service_factory(workers=0, **FAST) as service:
        headers = await service.user()
        job_id = (await submit(service, headers, webhook=receiver.url("/ok"))).json()["id"]
        r = await service.client.post(f"/api/jobs/{job_id}/cancel", headers=headers)
        assert r.status_code == 200, r.text
        (row,) = await settled(service, headers, job_id, 1)
        assert (row["event"], row["status"]) == ("completed", "delivered")
        (request,) = receiver.at("/ok")
        assert request.event == "completed"
        assert request.json["status"] == "canceled"
        assert request.json == r.json()


async def test_deliveries_of_other_peoples_jobs_are_not_found(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(workers=0, **FAST) as service:
        owner, other = await service.user(), await service.user()
        job_id = (await submit(service, owner, webhook=receiver.url("/ok"))).json()["id"]
        r = await service.client.get(f"/api/jobs/{job_id}/webhooks", headers=other)
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "job_not_found"
        r = await service.client.get(f"/api/jobs/{uuid.uuid4()}/webhooks", headers=owner)
        assert r.status_code == 404
        r = await service.client.get(f"/api/jobs/{job_id}/webhooks")
        assert r.status_code == 401


async def test_invalid_webhooks_are_refused(service_factory: Any) -> None:
    # Production policy: private, loopback and link-local destinations are refused.
    async with service_factory(workers=0) as service:
        headers = await service.user()
        refused = [
            "ftp://example.com/hook",
            "example.com/hook",
            "/relative/hook",
            "https://",
            "http://user:secret@example.com/hook",
            "http://example.com:99999/hook",
            "http://example.com/hook with space",
            "https://example.com/" + "a" * 2000,
            "http://127.0.0.1:8000/hook",
            "http://localhost/hook",
            "http://api.localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ]
        for url in refused:
            r = await submit(service, headers, webhook=url)
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["code"] == "invalid_webhook", url
        r = await submit(
            service, headers, webhook="https://example.com/hook", webhook_events_filter="finished"
        )
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_webhook_events"
        r = await submit(service, headers, webhook_events_filter="completed")
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "invalid_webhook"
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        assert (await service.client.get("/api/jobs", headers=headers)).json()["total"] == 0

        # A public name is accepted without being resolved (it is resolved before each delivery).
        r = await submit(service, headers, webhook="https://hooks.example.com/ml?x=1")
        assert r.status_code == 201, r.text


async def test_secret_is_made_on_first_use_and_rotates(service_factory: Any, receiver: Receiver) -> None:
    async with service_factory(**FAST) as service:
        headers = await service.user()
        first = await secret_of(service, headers)
        assert first == await secret_of(service, headers)
        assert first != await secret_of(service, await service.user())
        r = await service.client.post("/api/webhooks/secret/rotate", headers=headers)
        assert r.status_code == 200, r.text
        rotated = r.json()["secret"]
        assert rotated.startswith("whsec_")
        assert rotated != first
        assert await secret_of(service, headers) == rotated

        job_id = (
            await submit(service, headers, webhook=receiver.url("/ok"), webhook_events_filter="completed")
        ).json()["id"]
        await settled(service, headers, job_id, 1)
        (request,) = receiver.at("/ok")
        verify(rotated, request.headers, request.body)
        try:
            verify(first, request.headers, request.body)
        except AssertionError:
            pass
        else:
            raise AssertionError("the old secret still verifies")


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(**FAST | {"webhook_allow_private": False}) as service:
        deliverer = service.app.state.components.webhooks
        lookups: list[str] = []

        async def resolver(host: str, port: int) -> list[str]:
            lookups.append(host)
            return ["127.0.0.1"]  # what a rebinding DNS server answers after the submit

        deliverer.resolver = resolver
        headers = await service.user()
        r = await submit(
            service,
            headers,
            webhook=f"http://hooks.example.com:{receiver.port}/ok",
            webhook_events_filter="completed",
        )
        assert r.status_code == 201, r.text
        (row,) = await settled(service, headers, r.json()["id"], 1)
        assert (row["status"], row["attempts"]) == ("failed", 1)
        assert "hooks.example.com resolves to 127.0.0.1, a loopback address" in row["last_error"]
        assert lookups == ["hooks.example.com"]
        assert receiver.requests == []


async def test_the_checked_address_is_used_and_the_host_name_kept(
    service_factory: Any, receiver: Receiver
) -> None:
    async with service_factory(**FAST) as service:

        async def resolver(host: str, port: int) -> list[str]:
            assert host == "hooks.example.com"
            return ["127.0.0.1"]

        service.app.state.components.webhooks.resolver = resolver
        headers = await service.user()
        url = f"http://hooks.example.com:{receiver.port}/ok"
        job_id = (await submit(service, headers, webhook=url, webhook_events_filter="completed")).json()["id"]
        await settled(service, headers, job_id, 1)
        (request,) = receiver.at("/ok")
        assert request.headers["host"] == f"hooks.example.com:{receiver.port}"


async def test_webhooks_from_a_separate_worker_process(
    worker_env: dict[str, str], service_factory: Any, tmp_path: Path, receiver: Receiver
) -> None:
    env = worker_env | {
        "MLSERVICE_WEBHOOK_ALLOW_PRIVATE": "true",
        "MLSERVICE_WEBHOOK_RETRY_DELAYS": "0.05,0.1",
        "MLSERVICE_WEBHOOK_MAX_ATTEMPTS": "3",
    }
    async with service_factory(
        broker_url=env["MLSERVICE_BROKER_URL"], workers=0, storage_dir=tmp_path / "var" / "files", **FAST
    ) as service:
        headers = await service.user()
        ids = [
            (await submit(service, headers, f"job {i}", webhook=receiver.url(f"/flaky/1/{i}"))).json()["id"]
            for i in range(3)
        ]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.fixtures.worker",
            "test-echo",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            jobs = [await wait_for_job(service.client, headers, job_id, within=90) for job_id in ids]
            for job_id in ids:
                await settled(service, headers, job_id, 2, within=60)
        finally:
            proc.terminate()
            output = (await proc.communicate())[0].decode()
        assert proc.returncode == 0, output
        assert [j["status"] for j in jobs] == ["succeeded"] * 3, output
        secret = await secret_of(service, headers)
        for i, job in enumerate(jobs):
            requests = receiver.at(f"/flaky/1/{i}")
            assert [(r.event, r.status) for r in requests] == [
                ("start", 500),
                ("start", 200),
                ("completed", 200),
            ], output
            for request in requests:
                verify(secret, request.headers, request.body)
            assert requests[-1].json == job
