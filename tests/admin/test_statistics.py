from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from mlservice.history.statistics import percentile
from mlservice.jobs.tables import JobStatus
from mlservice.predictors.image_classifier import ImageClassifier
from mlservice.predictors.malware import MalwareDetection
from tests.conftest import Service, wait_for_job
from tests.fixtures.history import add_request, add_submitted, user_id
from tests.fixtures.predictors import EchoText

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
WINDOW = {"since": "2026-05-01T00:00:00Z", "until": "2026-05-02T00:00:00Z"}


async def stats(service: Service, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = await service.client.get("/api/admin/stats", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def by_model(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {m["model"]: m for m in body["models"]}


def numpy_summary(values: list[float]) -> dict[str, float]:
    a = np.array(values, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50, method="linear")),
        "p95": float(np.percentile(a, 95, method="linear")),
        "p99": float(np.percentile(a, 99, method="linear")),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def assert_matches_numpy(summary: dict[str, Any], values: list[float], backend: str) -> None:
    expected = numpy_summary(values)
    assert summary["count"] == len(values)
    assert summary["max"] == expected["max"]
    for name in ("p50", "p95", "p99"):
        if backend == "sqlite":
            # Interpolated here exactly as numpy does it, to the last bit.
            assert summary[name] == expected[name], name
        else:
            # percentile_cont interpolates from the lower neighbour only; numpy from the nearer
            # one, so the two can differ in the last bit.
            assert summary[name] == pytest.approx(expected[name], rel=1e-15, abs=1e-12), name
    assert summary["mean"] == pytest.approx(expected["mean"], rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 37, 100, 101, 1000])
def test_percentile_interpolates_as_numpy_does(n: int) -> None:
    rng = random.Random(n)
    for values in (
        sorted(rng.uniform(0, 1000) for _ in range(n)),
        sorted(float(rng.randrange(5)) for _ in range(n)),  # ties
        sorted(rng.lognormvariate(3, 2) for _ in range(n)),
    ):
        for q in (0, 1, 5, 25, 50, 75, 90, 95, 99, 99.9, 100):
            assert percentile(values, q / 100) == np.percentile(values, q, method="linear"), (n, q)


async def test_duration_percentiles_equal_numpy(service: Service, backend: str) -> None:
    admin = await service.admin()
    owner = await user_id(service, await service.user())
    rng = random.Random(2026)
    echo_ms = [round(rng.uniform(0.5, 900), 3) for _ in range(37)]
    echo_queue_us = [rng.randrange(0, 30_000_000) for _ in range(37)]
    image_ms = [12.5, 12.5, 3.0, 40.25, 7.125, 12.5, 1000.0, 0.001, 55.5, 8.0, 9.75]
    image_queue_us = [1, 2, 3, 1_000_000, 5, 5, 5, 250_000, 999_999, 17, 123_456]
    async with service.db.session(write=True) as session:
        for i, (ms, us) in enumerate(zip(echo_ms, echo_queue_us, strict=True)):
            await add_submitted(
                session, owner, "test-echo", at=T0 + timedelta(seconds=i), processing_ms=ms, queue_us=us
            )
        for i, (ms, us) in enumerate(zip(image_ms, image_queue_us, strict=True)):
            await add_submitted(
                session,
                owner,
                "image-classification",
                at=T0 + timedelta(minutes=i),
                processing_ms=ms,
                queue_us=us,
            )
        # Counted as requests, but with nothing to measure: still queued.
        await add_submitted(session, owner, "test-echo", at=T0, status=JobStatus.queued)
        # Outside the period, and a replay: not counted at all.
        await add_submitted(
            session, owner, "test-echo", at=T0 - timedelta(days=1), processing_ms=1e6, queue_us=1
        )
        replayed = await add_submitted(session, owner, "test-echo", at=T0, processing_ms=5.0, queue_us=9)
        add_request(session, owner, "test-echo", at=T0, job_id=replayed, replayed=True)

    body = await stats(service, admin, **WINDOW)
    assert body["since"].startswith("2026-05-01T00:00:00")
    models = by_model(body)
    echo, image = models["test-echo"], models["image-classification"]
    assert echo["requests"] == 37 + 2
    assert echo["jobs"] == {"queued": 1, "running": 0, "succeeded": 38, "failed": 0, "canceled": 0}

    echo_all_ms, echo_all_queue = [*echo_ms, 5.0], [*echo_queue_us, 9]
    assert_matches_numpy(echo["processing_ms"], echo_all_ms, backend)
    assert_matches_numpy(echo["queue_ms"], [us / 1000 for us in echo_all_queue], backend)
    assert_matches_numpy(image["processing_ms"], image_ms, backend)
    assert_matches_numpy(image["queue_ms"], [us / 1000 for us in image_queue_us], backend)
    assert_matches_numpy(body["overall"]["processing_ms"], echo_all_ms + image_ms, backend)
    assert_matches_numpy(
        body["overall"]["queue_ms"], [us / 1000 for us in echo_all_queue + image_queue_us], backend
    )


async def test_counts_error_rate_and_rejections(service: Service) -> None:
    admin = await service.admin()
    owner = await user_id(service, await service.user())
    async with service.db.session(write=True) as session:
        for status, count in [
            (JobStatus.succeeded, 6),
            (JobStatus.failed, 2),
            (JobStatus.canceled, 1),
            (JobStatus.running, 1),
        ]:
            for _ in range(count):
                await add_submitted(session, owner, "test-echo", at=T0, status=status, queue_us=10)
        for _ in range(3):
            add_request(
                session, owner, "test-echo", at=T0, http_status=402, error_code="insufficient_credits"
            )
        add_request(session, owner, "test-echo", at=T0, http_status=422, error_code="invalid_params")
        add_request(session, owner, "nope", at=T0, http_status=404, error_code="model_not_found")
        add_request(session, owner, None, at=T0, http_status=422, error_code="validation_error")

    body = await stats(service, admin, **WINDOW)
    models = by_model(body)
    echo = models["test-echo"]
    assert (echo["requests"], echo["accepted"], echo["rejected"]) == (14, 10, 4)
    assert echo["rejection_rate"] == pytest.approx(4 / 14)
    assert echo["rejections"] == {"insufficient_credits": 3, "invalid_params": 1}
    assert echo["jobs"] == {"queued": 0, "running": 1, "succeeded": 6, "failed": 2, "canceled": 1}
    assert echo["error_rate"] == pytest.approx(2 / 8)
    assert models["nope"]["rejections"] == {"model_not_found": 1}
    assert models["nope"]["error_rate"] is None
    assert models["nope"]["processing_ms"] == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }
    assert models[None]["rejections"] == {"validation_error": 1}
    assert list(models) == ["nope", "test-echo", None]

    overall = body["overall"]
    assert overall["model"] is None
    assert (overall["requests"], overall["accepted"], overall["rejected"]) == (16, 10, 6)
    assert overall["rejections"] == {
        "insufficient_credits": 3,
        "invalid_params": 1,
        "model_not_found": 1,
        "validation_error": 1,
    }
    assert overall["error_rate"] == pytest.approx(2 / 8)
    assert overall["predictions"] == {}


async def test_answer_distribution_and_input_sizes(service_factory: Any) -> None:
    predictors = [ImageClassifier, MalwareDetection, EchoText]
    async with service_factory(predictors=predictors, workers=0) as service:
        admin = await service.admin()
        owner = await user_id(service, await service.user())

        def classified(*labels: str) -> dict[str, Any]:
            return {"predictions": [{"label": label, "probability": 0.5} for label in labels]}

        async with service.db.session(write=True) as session:
            for labels in [("tabby", "tiger"), ("tabby",), ("tiger", "tabby"), ("tabby", "lynx")]:
                await add_submitted(session, owner, "image-classification", at=T0, output=classified(*labels))
            # Failed and unfinished jobs gave no answer.
            await add_submitted(session, owner, "image-classification", at=T0, status=JobStatus.failed)
            await add_submitted(session, owner, "image-classification", at=T0, status=JobStatus.running)
            for verdict in ["clean", "malicious", "clean"]:
                await add_submitted(session, owner, "malware-detection", at=T0, output={"verdict": verdict})
            await add_submitted(session, owner, "test-echo", at=T0, output={"echo": "HI"})
            for size, width, height in [(1000, 640, 480), (3000, 1920, 1080), (500, None, None)]:
                add_request(
                    session,
                    owner,
                    "image-classification",
                    at=T0,
                    http_status=402 if width else 415,
                    error_code="insufficient_credits" if width else "unsupported_media_type",
                    input_bytes=size,
                    width=width,
                    height=height,
                )

        models = by_model(await stats(service, admin, **WINDOW))
        image = models["image-classification"]
        assert image["predictions"] == {"tabby": 3, "tiger": 1}
        assert models["malware-detection"]["predictions"] == {"clean": 2, "malicious": 1}
        assert models["test-echo"]["predictions"] == {}
        assert image["input_bytes"] == {"count": 3, "mean": 1500.0, "min": 500, "max": 3000}
        assert image["image_width"] == {"count": 2, "mean": 1280.0, "min": 640, "max": 1920}
        assert image["image_height"] == {"count": 2, "mean": 780.0, "min": 480, "max": 1080}


async def test_default_period_and_a_real_job(service: Service) -> None:
    admin, user = await service.admin(), await service.user()
    r = await service.client.post("/api/jobs", data={"model": "test-echo", "text": "hi"}, headers=user)
    job = await wait_for_job(service.client, user, r.json()["id"])
    body = await stats(service, admin)
    until, since = datetime.fromisoformat(body["until"]), datetime.fromisoformat(body["since"])
    assert until - since == timedelta(hours=24)
    echo = by_model(body)["test-echo"]
    assert echo["processing_ms"]["count"] == 1
    assert echo["processing_ms"]["p99"] == job["processing_ms"]
    assert echo["input_bytes"] == {"count": 1, "mean": 2.0, "min": 2, "max": 2}
    # An earlier period holds nothing.
    empty = await stats(service, admin, until=(since - timedelta(days=1)).isoformat())
    assert empty["models"] == []
    assert empty["overall"]["requests"] == 0
    assert empty["overall"]["rejection_rate"] is None

    bad = await service.client.get(
        "/api/admin/stats", params={**WINDOW, "since": WINDOW["until"]}, headers=admin
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_period")
    for params in [{"until": "0001-01-01T00:00:00Z"}, {"since": "0001-01-01T00:00:00+05:00"}]:
        bad = await service.client.get("/api/admin/stats", params=params, headers=admin)
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_period"), params
    # A bare number is not read as a Unix timestamp: the parameters are ISO 8601 date-times.
    for value in ["0.88", "1764000000", " -3 "]:
        bad = await service.client.get("/api/admin/stats", params={"since": value}, headers=admin)
        assert bad.status_code == 422, value
