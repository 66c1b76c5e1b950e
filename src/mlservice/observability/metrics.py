"""Prometheus metrics of one process: an API app or a ``mlservice worker``.

Every :class:`ServiceMetrics` owns its registry (tests build many apps in one process). Counters
and histograms are updated where the outcome is already known (the HTTP middleware, the executor
after its commit); the gauges that describe shared state, such as the queue depth, are read from
the database when scraped, never on a request's or a job's path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from mlservice.jobs.tables import JobStatus
from mlservice.predictors.pool import PredictorPool

# The classic text format: what every Prometheus version scrapes (the names need no escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Long polls (GET /api/jobs/{id}?wait=) answer after up to 60 s.
HTTP_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PROCESSING_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
QUEUE_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)

FINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.canceled, JobStatus.aborted)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self.http_requests = Counter(
            "mlservice_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "mlservice_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            buckets=HTTP_SECONDS,
            registry=registry,
        )
        self.jobs_submitted = Counter(
            "mlservice_jobs_submitted", "Jobs accepted and queued.", ["model"], registry=registry
        )
        self.jobs_finished = Counter(
            "mlservice_jobs_finished",
            "Jobs that reached a final status (succeeded, failed, canceled).",
            ["model", "status"],
            registry=registry,
        )
        self.job_retries = Counter(
            "mlservice_job_retries",
            "Attempts that failed in the model and sent their job back to the queue.",
            ["model"],
            registry=registry,
        )
        self.jobs_dead_lettered = Counter(
            "mlservice_jobs_dead_lettered",
            "Jobs that failed on their last attempt (also counted as failed).",
            ["model"],
            registry=registry,
        )
        self.job_processing = Histogram(
            "mlservice_job_processing_seconds",
            "Model time of a job's batch (jobs.processing_ms), by model.",
            ["model"],
            buckets=PROCESSING_SECONDS,
            registry=registry,
        )
        self.job_queue = Histogram(
            "mlservice_job_queue_seconds",
            "Time from submit to a worker's claim (started_at - created_at), by model.",
            ["model"],
            buckets=QUEUE_SECONDS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "mlservice_job_batch_size",
            "Jobs claimed together for one model run, by model.",
            ["model"],
            buckets=BATCH_SIZES,
            registry=registry,
        )
        self.credits_captured = Counter(
            "mlservice_credits_captured",
            "Credits charged for succeeded jobs, by model.",
            ["model"],
            registry=registry,
        )
        self.retention_removed = Counter(
            "mlservice_retention_removed",
            "What the retention sweep removed, by kind: rows (idempotency_keys, uploads, "
            "webhook_deliveries, api_keys, request_history) or files of finished jobs (job_files).",
            ["kind"],
            registry=registry,
        )
        self.jobs_queued = Gauge(
            "mlservice_jobs_queued",
            "Jobs waiting in the database (the whole service's, read at scrape time), by model.",
            ["model"],
            registry=registry,
        )
        self.model_loaded = Gauge(
            "mlservice_model_loaded",
            "1 when this process has the model loaded, by model.",
            ["model"],
            registry=registry,
        )

    def declare_models(self, models: Iterable[str]) -> None:
        """Create the job series of ``models`` at zero, so rates exist before the first job."""
        for model in models:
            for status in FINAL_STATUSES:
                self.jobs_finished.labels(model, status.value)
            for metric in (
                self.jobs_submitted,
                self.job_retries,
                self.jobs_dead_lettered,
                self.credits_captured,
                self.job_processing,
                self.job_queue,
                self.batch_size,
            ):
                metric.labels(model)

    def refresh(self, pool: PredictorPool, queued: Mapping[str, int] | None, *, running_here: bool) -> None:
        """Set the gauges that describe shared state: the models this process has loaded
        (``running_here``: it runs jobs) and the queued jobs per model (None: they could not be
        counted, so no number rather than a stale one)."""
        for slug in pool.classes:
            self.model_loaded.labels(slug).set(1 if running_here and pool.is_loaded(slug) else 0)
        self.jobs_queued.clear()
        if queued is None:
            return
        for slug in sorted(set(pool.classes) | set(queued)):
            self.jobs_queued.labels(slug).set(queued.get(slug, 0))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
