"""GET /metrics: request and job series with the right labels and counts, per-app registries."""

from __future__ import annotations

import uuid
from typing import Any

from mlservice.observability.metrics import ServiceMetrics
from tests.conftest import Service, wait_for_job
from tests.observability.conftest import sample, scrape, scrape_until, submit_echo

ECHO = "test-echo"


async def test_requests_and_jobs_are_counted(service: Service) -> None:
    headers = await service.user()
    ids = []
    for text in ("one", "two", "boom"):
        r = await submit_echo(service, headers, text)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert (await submit_echo(service, headers, "invalid")).status_code == 422
    done = [await wait_for_job(service.client, headers, job_id) for job_id in ids]
    assert [job["status"] for job in done] == ["succeeded", "succeeded", "failed"]
    assert (await service.client.get("/api/nothing-here/123")).status_code == 404

    s = await scrape_until(
        service, lambda s: sample(s, "mlservice_jobs_finished_total", model=ECHO, status="failed") == 1
    )

    # Requests by route template and status: the job ids never become label values.
    assert sample(s, "mlservice_http_requests_total", method="POST", route="/api/jobs", status="201") == 3
    assert sample(s, "mlservice_http_requests_total", method="POST", route="/api/jobs", status="422") == 1
    polls = sample(s, "mlservice_http_requests_total", method="GET", route="/api/jobs/{job_id}", status="200")
    assert polls is not None
    assert polls >= 3
    assert sample(s, "mlservice_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert sample(s, "mlservice_http_request_duration_seconds_count", method="POST", route="/api/jobs") == 4
    labels = {value for (_, pairs) in s for _, value in pairs}
    assert not any(job_id in value for job_id in ids for value in labels)
    assert not any("nothing-here" in value for value in labels)

    # Jobs: two succeeded, the poison one retried twice and then failed for good.
    assert sample(s, "mlservice_jobs_submitted_total", model=ECHO) == 3
    assert sample(s, "mlservice_jobs_finished_total", model=ECHO, status="succeeded") == 2
    assert sample(s, "mlservice_jobs_finished_total", model=ECHO, status="failed") == 1
    assert sample(s, "mlservice_jobs_finished_total", model=ECHO, status="canceled") == 0
    assert sample(s, "mlservice_job_retries_total", model=ECHO) == 2
    assert sample(s, "mlservice_jobs_dead_lettered_total", model=ECHO) == 1
    assert sample(s, "mlservice_credits_captured_total", model=ECHO) == 2 * 3
    # Five claims (1 + 1 + 3 attempts), each with its queue time, in batches that add up to five.
    assert sample(s, "mlservice_job_queue_seconds_count", model=ECHO) == 5
    assert sample(s, "mlservice_job_batch_size_sum", model=ECHO) == 5
    # Model time of the jobs that got a result.
    assert sample(s, "mlservice_job_processing_seconds_count", model=ECHO) == 2
    assert sample(s, "mlservice_job_processing_seconds_bucket", model=ECHO, le="+Inf") == 2
    # Nothing waits; the models this process runs are known, the untouched one at zero.
    assert sample(s, "mlservice_jobs_queued", model=ECHO) == 0
    assert sample(s, "mlservice_jobs_queued", model="image-classification") == 0
    assert sample(s, "mlservice_jobs_finished_total", model="image-classification", status="succeeded") == 0
    assert sample(s, "mlservice_model_loaded", model=ECHO) == 1
    assert sample(s, "mlservice_model_loaded", model="image-classification") == 0
    # The process collector is there too.
    assert sample(s, "process_cpu_seconds_total") is not None


async def test_queue_depth_and_cancel(service_factory: Any) -> None:
    async with service_factory(workers=0) as service:
        headers = await service.user()
        ids = [(await submit_echo(service, headers, f"wait {i}")).json()["id"] for i in range(3)]
        s = await scrape(service)
        assert sample(s, "mlservice_jobs_queued", model=ECHO) == 3
        r = await service.client.post(f"/api/jobs/{ids[0]}/cancel", headers=headers)
        assert r.status_code == 200, r.text
        s = await scrape(service)
        assert sample(s, "mlservice_jobs_queued", model=ECHO) == 2
        assert sample(s, "mlservice_jobs_finished_total", model=ECHO, status="canceled") == 1
        assert (
            sample(
                s,
                "mlservice_http_requests_total",
                method="POST",
                route="/api/jobs/{job_id}/cancel",
                status="200",
            )
            == 1
        )
        # An API that runs no jobs has no model loaded.
        assert sample(s, "mlservice_model_loaded", model=ECHO) == 0


async def test_every_app_has_its_own_registry(service_factory: Any) -> None:
    first, second = ServiceMetrics(), ServiceMetrics()  # no duplicate-registration error
    first.http_requests.labels("GET", "/x", "200").inc()
    assert second.http_requests.labels("GET", "/x", "200")._value.get() == 0
    async with service_factory(workers=0) as one, service_factory(workers=0) as two:
        await one.client.get("/health")
        s = await scrape(two)
        assert sample(s, "mlservice_http_requests_total", method="GET", route="/health", status="200") is None


async def test_metrics_can_be_turned_off(service_factory: Any) -> None:
    async with service_factory(workers=0, metrics_enabled=False) as service:
        assert (await service.client.get("/metrics")).status_code == 404
        assert (await service.client.get("/health")).status_code == 200


async def test_unknown_methods_are_one_label(service: Service) -> None:
    await service.client.request("BREW", f"/api/jobs/{uuid.uuid4()}")
    s = await scrape(service)
    assert any(
        name == "mlservice_http_requests_total" and ("method", "other") in labels for name, labels in s
    )
