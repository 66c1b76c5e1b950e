"""/v1 predictions over httpx, in process, on each database: shapes, statuses, waiting, paging,
billing, history and other people's ids."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from mlservice.history.tables import PredictionRequest
from mlservice.jobs.prediction_view import prediction_of, version_of
from mlservice.jobs.prefer import InvalidPrefer, wait_seconds
from mlservice.jobs.tables import Job, JobStatus
from mlservice.replicate.errors import InvalidCursor
from mlservice.replicate.predictions import Cursor
from mlservice.security.signed_urls import SignedUrls
from mlservice.types import utcnow
from mlservice.webhooks.tables import WebhookDelivery
from tests.conftest import Service
from tests.fixtures.api import totals
from tests.fixtures.predictors import EchoText
from tests.replicate.conftest import create

LINKS = SignedUrls("a test secret of more than 32 characters", 3600)

PREDICTION_FIELDS = {
    "id",
    "model",
    "version",
    "input",
    "output",
    "error",
    "logs",
    "status",
    "data_removed",
    "created_at",
    "started_at",
    "completed_at",
    "metrics",
    "urls",
}


def assert_problem(r: Any, status: int, code: str) -> dict[str, Any]:
    """Replicate's error shape (what its clients read: title, status, detail) with our code."""
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["title"]
    assert body["detail"]
    return body


async def wallet(service: Service, headers: dict[str, str]) -> dict[str, int]:
    return totals((await service.client.get("/api/wallet", headers=headers)).json())


async def wait_until(service: Service, headers: dict[str, str], prediction_id: str, *statuses: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        r = await service.client.get(f"/v1/predictions/{prediction_id}", headers=headers)
        assert r.status_code == 200, r.text
        if r.json()["status"] in statuses:
            return r.json()
        assert time.monotonic() < deadline, r.json()
        await asyncio.sleep(0.05)


async def test_create_and_wait_gives_the_finished_prediction(service: Service) -> None:
    headers = await service.user()
    r = await create(service, headers, input={"text": "hello", "sleep_ms": 0}, prefer="wait")
    assert r.status_code == 201, r.text
    assert r.headers["Preference-Applied"] == "wait=60"
    assert r.headers["Cache-Control"] == "no-store"
    p = r.json()
    assert set(p) == PREDICTION_FIELDS
    assert p["status"] == "succeeded"
    assert p["model"] == "mlservice/test-echo"
    assert p["version"] == version_of(EchoText).id
    assert p["input"] == {"text": "hello", "sleep_ms": 0}
    base = f"http://testserver/api/jobs/{p['id']}"
    files = p["output"].pop("files")
    assert p["output"] == {"echo": "HELLO", "batch_size": 1}
    # Its files are links that open without a credential, as Replicate's clients read them.
    assert set(files) == {"echo"}
    assert files["echo"].startswith(f"{base}/artifacts/echo?token=")
    assert p["error"] is None
    assert p["logs"] == ""
    assert p["metrics"]["predict_time"] >= 0
    assert p["metrics"]["total_time"] >= p["metrics"]["predict_time"]
    assert p["created_at"] <= p["started_at"] <= p["completed_at"]
    url = f"http://testserver/v1/predictions/{p['id']}"
    stream = p["urls"].pop("stream")
    assert stream.startswith(f"{url}/stream?token=")
    assert p["urls"] == {"get": url, "cancel": f"{url}/cancel", "web": f"http://testserver/jobs/{p['id']}"}
    assert r.headers["Location"] == url
    # The same job as /api shows it, billed as /api bills it.
    job = (await service.client.get(f"/api/jobs/{p['id']}", headers=headers)).json()
    assert job["status"] == "succeeded"
    assert job["cost"] == 3
    assert await wallet(service, headers) == {"balance": 97, "held": 0, "available": 97}
    again = (await service.client.get(p["urls"]["get"], headers=headers)).json()
    assert again["urls"]["stream"] == stream  # the same links within a few minutes
    assert again["output"]["files"] == files
    for sent in (headers, {}):
        artifact = await service.client.get(files["echo"], headers=sent)
        assert artifact.status_code == 200
        assert artifact.content == b"hello"
    # Without its token the path is the owner's alone.
    assert (await service.client.get(f"{base}/artifacts/echo")).status_code == 401
    assert (await service.client.get(f"{base}/artifacts/echo", headers=headers)).content == b"hello"


def unsaved_job(status: JobStatus, **fields: Any) -> Job:
    """A ``test-echo`` job in ``status``, never written: what a prediction is drawn from."""
    return Job(
        id=uuid.uuid4(),
        user_id=uuid.uuid4(),
        model_slug="test-echo",
        status=status,
        cost=3,
        params={},
        input_meta={},
        input_text="x",
        artifacts={},
        **fields,
    )


async def test_statuses_are_replicates(service: Service) -> None:
    """queued → starting, running → processing; the finished ones keep their names."""
    now = utcnow()
    expected = {
        JobStatus.queued: "starting",
        JobStatus.running: "processing",
        JobStatus.succeeded: "succeeded",
        JobStatus.failed: "failed",
        JobStatus.canceled: "canceled",
    }
    for status, name in expected.items():
        job = unsaved_job(
            status,
            created_at=now,
            finished_at=now + timedelta(seconds=1) if status.finished else None,
            error_code="prediction_failed" if status is JobStatus.failed else None,
            error_message="it broke" if status is JobStatus.failed else None,
        )
        p = prediction_of(job, {"test-echo": EchoText}, "http://x", LINKS)
        assert p.status == name
        assert p.error == ("it broke" if status is JobStatus.failed else None)
        # The answer to a Prefer: wait that ran out says "starting" for anything unfinished.
        waited = prediction_of(job, {"test-echo": EchoText}, "http://x", LINKS, waited_out=True)
        assert waited.status == (name if status.finished else "starting")


def test_metrics_once_finished_only() -> None:
    """``metrics`` is ``{}`` until the prediction finishes, then has ``predict_time`` (the model's
    time, in seconds) and ``total_time``, as Replicate's predictions have them."""
    now = utcnow()

    def metrics(status: JobStatus, **times: Any) -> Any:
        job = unsaved_job(status, created_at=now, **times)
        # As /v1 answers it and as its webhook bodies carry it: both are this dump.
        return prediction_of(job, {"test-echo": EchoText}, "http://x", LINKS).model_dump(mode="json")[
            "metrics"
        ]

    later = {"started_at": now + timedelta(seconds=1), "finished_at": now + timedelta(seconds=3)}
    assert metrics(JobStatus.queued) == {}
    assert metrics(JobStatus.running, started_at=later["started_at"], processing_ms=5.0) == {}
    assert metrics(JobStatus.succeeded, processing_ms=120.0, **later) == {
        "predict_time": 0.12,
        "total_time": 3.0,
    }
    # A failure has no model time of its own: the attempt's time stands for it.
    assert metrics(JobStatus.failed, **later) == {"predict_time": 2.0, "total_time": 3.0}
    # Canceled while queued: no model ran.
    assert metrics(JobStatus.canceled, finished_at=later["finished_at"]) == {"total_time": 3.0}
    # Canceled while running: the model ran from the start to the cancel.
    assert metrics(JobStatus.canceled, **later) == {"predict_time": 2.0, "total_time": 3.0}
    # Aborted at its deadline before it started: no model ran.
    assert metrics(JobStatus.aborted, finished_at=later["finished_at"]) == {"total_time": 3.0}


def test_prefer_and_cursor_parsing_refuse_garbage() -> None:
    assert wait_seconds(None) is None
    assert wait_seconds("wait") == 60
    assert wait_seconds("respond-async, wait=5") == 5
    assert wait_seconds('wait="7"; x=y') == 7
    for bad in ("wait=\u00b2", "wait=1.5", "wait=-1", "wait=0"):
        with pytest.raises(InvalidPrefer):
            wait_seconds(bad)
    cursor = Cursor(True, utcnow(), uuid.uuid4())
    assert Cursor.decode(cursor.encode()) == cursor
    for raw in (b"", b"[1, 5, 5]", b'{"a": 1}', b'[1, "2026-01-01T00:00:00", "x"]', b'[1, "x", 5]'):
        with pytest.raises(InvalidCursor):
            Cursor.decode(base64.urlsafe_b64encode(raw).decode())
    with pytest.raises(InvalidCursor):
        Cursor.decode("%%%")


async def test_a_failing_model_gives_a_failed_prediction(service: Service) -> None:
    headers = await service.user()
    created = (await create(service, headers, input={"text": "boom"})).json()
    assert created["status"] == "starting"
    done = await wait_until(service, headers, created["id"], "failed")
    assert "exploded" in done["error"]
    assert done["output"] is None
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}


async def test_prefer_wait_returns_when_the_wait_ends(service: Service) -> None:
    headers = await service.user()
    started = time.monotonic()
    r = await create(service, headers, input={"text": "slow", "sleep_ms": 2500}, prefer="wait=1")
    assert 0.9 < time.monotonic() - started < 2.4
    assert r.status_code == 201
    assert r.headers["Preference-Applied"] == "wait=1"
    assert r.json()["status"] == "starting"  # unfinished, whatever the job is doing (see prediction_of)
    assert r.json()["metrics"] == {}
    running = await wait_until(service, headers, r.json()["id"], "processing", "succeeded")
    assert running["status"] in {"processing", "succeeded"}
    done = await wait_until(service, headers, r.json()["id"], "succeeded")
    assert done["output"]["echo"] == "SLOW"
    assert isinstance(done["metrics"]["predict_time"], float)
    assert 2.5 <= done["metrics"]["predict_time"] <= done["metrics"]["total_time"]
    for bad in ("wait=0", "wait=61", "wait=soon"):
        assert_problem(await create(service, headers, prefer=bad), 400, "invalid_prefer")
    # Preferences we do not know are ignored.
    r = await create(service, headers, prefer="respond-async")
    assert r.status_code == 201
    assert "Preference-Applied" not in r.headers


async def test_model_route_and_version_forms(service: Service) -> None:
    headers = await service.user()
    version = version_of(EchoText).id
    for ref in ("test-echo", "mlservice/test-echo", f"mlservice/test-echo:{version}", version):
        r = await create(service, headers, ref, {"prompt": "hi"}, prefer="wait")
        assert r.status_code == 201, (ref, r.text)
        assert r.json()["output"]["echo"] == "HI"
    r = await service.client.post(
        "/v1/models/mlservice/test-echo/predictions",
        json={"input": {"text": "path"}, "stream": False},
        headers=headers | {"Prefer": "wait=30"},
    )
    assert r.status_code == 201, r.text
    assert r.json()["output"]["echo"] == "PATH"


async def test_unknown_models_and_versions_are_404(service: Service) -> None:
    headers = await service.user()
    assert_problem(await create(service, headers, "nope"), 404, "model_not_found")
    assert_problem(await create(service, headers, "stability-ai/test-echo"), 404, "model_not_found")
    assert_problem(
        await create(service, headers, "mlservice/test-echo:" + "0" * 64), 404, "version_not_found"
    )
    assert_problem(await create(service, headers, "f" * 64), 404, "version_not_found")
    r = await service.client.post(
        "/v1/models/other/test-echo/predictions", json={"input": {}}, headers=headers
    )
    assert_problem(r, 404, "model_not_found")
    r = await service.client.post(
        "/v1/models/mlservice/nope/predictions", json={"input": {}}, headers=headers
    )
    assert_problem(r, 404, "model_not_found")


async def test_bad_input_is_422_and_costs_nothing(service: Service) -> None:
    headers = await service.user()
    assert_problem(await create(service, headers, input={}), 422, "empty_text")
    assert_problem(await create(service, headers, input={"text": "a", "prompt": "b"}), 422, "ambiguous_input")
    assert_problem(await create(service, headers, input={"text": 5}), 422, "invalid_input")
    assert_problem(await create(service, headers, input={"text": "a", "top_k": 3}), 422, "invalid_params")
    assert_problem(await create(service, headers, input={"text": "a", "sleep_ms": -1}), 422, "invalid_params")
    body = assert_problem(
        await service.client.post("/v1/predictions", json={"input": {}}, headers=headers),
        422,
        "validation_error",
    )
    assert body["details"]["fields"][0]["field"] == "version"
    assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}


async def test_not_enough_credits_is_402_and_recorded(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], workers=0) as service:
        headers, admin = await service.user(), await service.admin()
        await service.client.patch("/api/admin/models/test-echo", json={"price": 101}, headers=admin)
        body = assert_problem(await create(service, headers), 402, "insufficient_credits")
        assert body["title"] == "Payment Required"
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        await service.client.patch("/api/admin/models/test-echo", json={"price": 3}, headers=admin)
        accepted = (await create(service, headers)).json()
        await create(service, headers, input={})  # 422
        async with service.db.session() as session:
            rows = list(await session.scalars(select(PredictionRequest).order_by(PredictionRequest.id)))
        assert [(r.http_status, r.error_code, r.model_slug) for r in rows] == [
            (402, "insufficient_credits", "test-echo"),
            (201, None, "test-echo"),
            (422, "empty_text", "test-echo"),
        ]
        assert str(rows[1].job_id) == accepted["id"]
        assert rows[1].input_bytes == len("hello")


async def test_idempotency_key_gives_the_same_prediction(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], workers=0) as service:
        headers = await service.user()
        keyed = headers | {"Idempotency-Key": "v1-once"}
        first, again = [(await create(service, keyed)).json() for _ in range(2)]
        assert first["id"] == again["id"]
        assert await wallet(service, headers) == {"balance": 100, "held": 3, "available": 97}
        assert_problem(await create(service, keyed, input={"text": "other"}), 422, "idempotency_key_reused")


async def test_submissions_are_rate_limited_as_in_api(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], rate_limit_submit="2/minute", workers=0) as service:
        headers = await service.user()
        assert (
            await service.client.post("/api/jobs", data={"model": "test-echo", "text": "a"}, headers=headers)
        ).status_code == 201
        assert (await create(service, headers)).status_code == 201
        r = await create(service, headers)
        assert_problem(r, 429, "rate_limited")
        assert int(r.headers["Retry-After"]) > 0


async def test_list_pages_by_cursor_both_ways(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], workers=0) as service:
        headers, other = await service.user(), await service.user()
        ids = [(await create(service, headers, input={"text": f"t{i}"})).json()["id"] for i in range(5)]
        await create(service, other)
        newest_first = ids[::-1]

        async def page(url: str) -> dict[str, Any]:
            r = await service.client.get(url, headers=headers)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        first = await page("/v1/predictions?limit=2")
        assert [p["id"] for p in first["results"]] == newest_first[:2]
        assert first["previous"] is None
        second = await page(first["next"])
        assert [p["id"] for p in second["results"]] == newest_first[2:4]
        third = await page(second["next"])
        assert [p["id"] for p in third["results"]] == newest_first[4:]
        assert third["next"] is None
        back = await page(third["previous"])
        assert [p["id"] for p in back["results"]] == newest_first[2:4]
        front = await page(back["previous"])
        assert [p["id"] for p in front["results"]] == newest_first[:2]
        assert front["previous"] is None
        # A prediction made meanwhile does not shift the pages after the cursor.
        await create(service, headers)
        assert [p["id"] for p in (await page(first["next"]))["results"]] == newest_first[2:4]
        everything = await page("/v1/predictions")
        assert len(everything["results"]) == 6
        assert everything["next"] is None
        assert_problem(
            await service.client.get("/v1/predictions?cursor=garbage", headers=headers), 400, "invalid_cursor"
        )


async def test_other_peoples_predictions_are_404(service: Service) -> None:
    owner, other = await service.user(), await service.user()
    p = (await create(service, owner, prefer="wait")).json()
    for method, path in (("GET", ""), ("POST", "/cancel")):
        r = await service.client.request(method, f"/v1/predictions/{p['id']}{path}", headers=other)
        assert_problem(r, 404, "job_not_found")
    assert_problem(await service.client.get("/v1/predictions/not-an-id", headers=other), 404, "job_not_found")
    assert (await service.client.get("/v1/predictions", headers=other)).json()["results"] == []
    # The path of its file, without the link's token: not theirs.
    bare = p["output"]["files"]["echo"].partition("?")[0]
    assert (await service.client.get(bare, headers=other)).status_code == 404


async def test_cancel(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], workers=0) as service:
        headers = await service.user()
        p = (await create(service, headers)).json()
        r = await service.client.post(f"/v1/predictions/{p['id']}/cancel", headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "canceled"
        assert r.json()["completed_at"]
        assert await wallet(service, headers) == {"balance": 100, "held": 0, "available": 100}
        # Canceling a finished prediction answers it as it is.
        again = await service.client.post(f"/v1/predictions/{p['id']}/cancel", headers=headers)
        assert again.status_code == 200
        assert again.json()["status"] == "canceled"


async def test_webhook_is_stored_and_sent_as_a_prediction(service_factory: Any) -> None:
    async with service_factory(predictors=[EchoText], webhook_allow_private=True) as service:
        headers = await service.user()
        hook = "http://127.0.0.1:9/hook"
        chosen = await create(
            service, headers, webhook=hook, webhook_events_filter=["completed"], prefer="wait"
        )
        default = await create(service, headers, webhook=hook, prefer="wait")
        assert chosen.status_code == default.status_code == 201
        async with service.db.session() as session:
            job = await session.get(Job, uuid.UUID(chosen.json()["id"]))
            assert job is not None
            assert (job.webhook_url, job.webhook_events) == (hook, ["completed"])
            job = await session.get(Job, uuid.UUID(default.json()["id"]))
            assert job is not None
            assert (job.webhook_url, job.webhook_events) == (hook, None)
            sent = list(
                await session.scalars(
                    select(WebhookDelivery).where(WebhookDelivery.job_id == uuid.UUID(chosen.json()["id"]))
                )
            )
        assert [d.event for d in sent] == ["completed"]
        body = sent[0].payload
        assert body["id"] == chosen.json()["id"]
        assert body["status"] == "succeeded"
        assert body["output"]["echo"] == "HELLO"
        assert body["model"] == "mlservice/test-echo"
        assert body["urls"]["get"] == f"/v1/predictions/{body['id']}"
        # The /api view of the job does not show how its webhooks are rendered.
        api_view = (await service.client.get(f"/api/jobs/{body['id']}", headers=headers)).json()
        assert api_view["input"] == {"chars": 5, "text": "hello"}


@pytest.mark.parametrize(
    ("webhook", "events", "code"),
    [
        ("ftp://example.com/hook", None, "invalid_webhook"),
        ("http://127.0.0.1/hook", None, "invalid_webhook"),
        ("https://example.com/hook", ["finished"], "invalid_webhook_events"),
    ],
)
async def test_bad_webhooks_are_422(
    service: Service, webhook: str, events: list[str] | None, code: str
) -> None:
    headers = await service.user()
    r = await create(service, headers, webhook=webhook, webhook_events_filter=events)
    assert_problem(r, 422, code)


async def test_models_and_versions(service: Service) -> None:
    headers = await service.user()
    await create(service, headers, prefer="wait")
    models = (await service.client.get("/v1/models", headers=headers)).json()
    assert models["previous"] is None
    assert models["next"] is None
    by_name = {m["name"]: m for m in models["results"]}
    assert set(by_name) == {"image-classification", "test-echo"}
    echo = by_name["test-echo"]
    assert echo["owner"] == "mlservice"
    assert echo["run_count"] == 1
    assert echo["price"] == 3
    assert echo["url"] == "http://testserver/models/test-echo"
    version = echo["latest_version"]
    assert version["id"] == version_of(EchoText).id
    inputs = version["openapi_schema"]["components"]["schemas"]["Input"]
    assert set(inputs["properties"]) == {"text", "sleep_ms"}
    assert inputs["required"] == ["text"]
    image = by_name["image-classification"]["latest_version"]["openapi_schema"]["components"]["schemas"]
    assert image["Input"]["properties"]["image"]["format"] == "uri"

    one = (await service.client.get("/v1/models/mlservice/test-echo", headers=headers)).json()
    assert one == echo
    paged = (await service.client.get("/v1/models?limit=1", headers=headers)).json()
    assert [m["name"] for m in paged["results"]] == ["image-classification"]
    assert [
        m["name"] for m in (await service.client.get(paged["next"], headers=headers)).json()["results"]
    ] == ["test-echo"]
    versions = (await service.client.get("/v1/models/mlservice/test-echo/versions", headers=headers)).json()
    assert versions["results"] == [version]
    got = await service.client.get(
        f"/v1/models/mlservice/test-echo/versions/{version['id']}", headers=headers
    )
    assert got.json() == version
    wrong = await service.client.get(
        f"/v1/models/mlservice/image-classification/versions/{version['id']}", headers=headers
    )
    assert_problem(wrong, 404, "version_not_found")
    assert_problem(
        await service.client.get("/v1/models/mlservice/nope", headers=headers), 404, "model_not_found"
    )
    assert_problem(
        await service.client.get("/v1/models/someone/test-echo", headers=headers), 404, "model_not_found"
    )


async def test_authentication(service: Service) -> None:
    assert_problem(await service.client.get("/v1/predictions"), 401, "not_authenticated")
    wrong = {"Authorization": "Bearer mls_not-a-key"}
    assert_problem(await service.client.get("/v1/predictions", headers=wrong), 401, "not_authenticated")
    assert_problem(await create(service, wrong), 401, "not_authenticated")
    email = f"cookie-{uuid.uuid4().hex[:8]}@example.com"
    headers = await service.user(email)
    assert (await service.client.get("/v1/account", headers=headers)).json() == {
        "type": "user",
        "username": email,
        "name": email,
        "github_url": None,
    }
    # The web UI's cookie is no credential here: /v1 has no CSRF check.
    r = await service.client.post(
        "/api/auth/cookie/login", data={"username": email, "password": "correct horse 42"}
    )
    assert r.status_code in {200, 204}
    assert service.client.cookies
    assert_problem(await service.client.get("/v1/predictions"), 401, "not_authenticated")
    assert_problem(await create(service, {}), 401, "not_authenticated")
    service.client.cookies.clear()


async def test_unknown_paths_answer_json(service: Service) -> None:
    headers = await service.user()
    r = await service.client.get("/v1/nothing-here", headers=headers)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")


async def test_links_open_their_own_path_only_until_they_expire(service: Service) -> None:
    headers = await service.user()
    first, second = [
        (await create(service, headers, input={"text": text, "sleep_ms": 0}, prefer="wait")).json()
        for text in ("one", "two")
    ]
    link = first["output"]["files"]["echo"]
    path, _, token = link.removeprefix("http://testserver").partition("?token=")

    async def opened(url: str) -> int:
        r = await service.client.get(url)
        if r.status_code == 403:
            assert r.json()["error"]["code"] == "invalid_link"
        return r.status_code

    assert await opened(link) == 200
    other_path = f"/api/jobs/{second['id']}/artifacts/echo"
    assert await opened(f"{other_path}?token={token}") == 403  # another job's file
    assert await opened(f"{path}?token={token[:-2]}xx") == 403  # tampered
    bearer = headers["Authorization"].removeprefix("Bearer ")
    assert await opened(f"{path}?token={bearer}") == 403  # an access token is no link
    stream_token = first["urls"]["stream"].partition("?token=")[2]
    assert await opened(f"{path}?token={stream_token}") == 403  # the stream's link
    links = service.app.state.components.links
    owner = uuid.UUID((await service.client.get("/api/users/me", headers=headers)).json()["id"])
    expired = links.sign(path, owner, now=time.time() - links.lifetime_seconds - 600)
    assert await opened(expired) == 403
    assert await opened(links.sign(path, owner)) == 200
    # A link names its owner: one signed for someone else opens nothing of theirs.
    someone = await service.user()
    someone_id = uuid.UUID((await service.client.get("/api/users/me", headers=someone)).json()["id"])
    assert await opened(links.sign(path, someone_id)) == 404
    assert await opened(links.sign(path, uuid.uuid4())) == 403  # no such account

    # The stream's link opens it with no credential (Replicate's JavaScript client sends none).
    async with service.client.stream("GET", first["urls"]["stream"]) as r:
        assert r.status_code == 200
        body = (await r.aread()).decode()
    assert "event: output" in body
    assert "event: done" in body
    r = await service.client.get(first["urls"]["stream"].replace(first["id"], second["id"]))
    assert r.status_code == 403
