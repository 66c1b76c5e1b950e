"""The composition root: every long-lived part of a process, built from the settings, started and
closed in dependency order.

Each entry point builds from here: the API (:func:`mlservice.app.create_app`), ``mlservice
worker`` (:mod:`mlservice.worker`) and ``mlservice bot`` (:mod:`mlservice.bot.runner`). Request
dependencies, bot handlers and use cases receive the :class:`Components` at run time; nothing
imports the entry points. This module imports no HTTP API, web page or bot module, so a worker
process loads none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import text

from mlservice.apikeys.uses import KeyUses
from mlservice.catalog.cache import CatalogCache
from mlservice.catalog.service import sync_catalog
from mlservice.db import Database
from mlservice.faces.hooks import face_hooks
from mlservice.jobs import repository as jobs_repository
from mlservice.jobs.backpressure import QueueCaps
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.events import Channel, JobEvents
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.hooks import JobHooks
from mlservice.jobs.prediction_view import WEBHOOK_FLAVOUR as V1_FLAVOUR
from mlservice.jobs.prediction_view import prediction_body
from mlservice.jobs.retries import Backoff
from mlservice.jobs.stream_slots import StreamSlots
from mlservice.jobs.tables import Job
from mlservice.jobs.views import job_read
from mlservice.jobs.workers import JobWorkers
from mlservice.observability.jobs import JobTelemetry
from mlservice.observability.metrics import ServiceMetrics
from mlservice.predictors import runtime
from mlservice.predictors.base import Predictor
from mlservice.predictors.pool import PredictorPool
from mlservice.predictors.registry import discover_predictors
from mlservice.predictors.vector_index import VectorIndexFactory
from mlservice.queue.base import JobQueue
from mlservice.queue.memory import InProcessQueue
from mlservice.queue.rabbitmq import RabbitMQQueue
from mlservice.retention.policy import RetentionPolicy
from mlservice.retention.sweeper import RetentionSweeper
from mlservice.security.ratelimit import RateLimiter
from mlservice.security.signed_urls import SignedUrls
from mlservice.security.tokens import AccessTokens
from mlservice.settings import Settings
from mlservice.storage.base import Storage
from mlservice.storage.database import DatabaseStorage
from mlservice.storage.local import LocalStorage
from mlservice.users.oidc import OidcProviders
from mlservice.users.principals import Principals
from mlservice.users.transports import configure_auth
from mlservice.webhooks import outbox
from mlservice.webhooks.deliverer import RetryPolicy, WebhookDeliverer

log = logging.getLogger(__name__)


@dataclass
class Components:
    settings: Settings
    db: Database
    storage: Storage
    queue: JobQueue
    publisher: JobPublisher
    events: JobEvents
    predictors: dict[str, type[Predictor]]
    pool: PredictorPool
    # Consumers of the queue in this process (None: an API process that runs no jobs).
    workers: JobWorkers | None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    webhooks: WebhookDeliverer | None = None
    api_key_uses: KeyUses = field(default_factory=KeyUses)
    rate_limiter: RateLimiter | None = None
    # Removes what has expired, in the processes that run workers (None in the others).
    retention: RetentionSweeper | None = None
    # Access tokens and the accounts they name, from the settings and the database.
    tokens: AccessTokens = field(init=False)
    # The links /v1 gives out that open without a credential (file outputs, urls.stream).
    links: SignedUrls = field(init=False)
    principals: Principals = field(init=False)
    # The OpenID providers the web UI offers (none when no MLSERVICE_OIDC_* is set).
    oidc: OidcProviders = field(init=False)
    # The catalog rows submits read, for a few seconds.
    catalog: CatalogCache = field(init=False)
    # The models' queue caps, against queue depths read at most every second or so.
    queue_caps: QueueCaps = field(init=False)
    # The event streams each user has open in this process.
    streams: StreamSlots = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = AccessTokens(self.settings.jwt_secret_value(), self.settings.jwt_lifetime_seconds)
        self.links = SignedUrls(self.settings.jwt_secret_value(), self.settings.signed_url_lifetime_seconds)
        self.principals = Principals(self.db, self.settings.auth_cache_seconds)
        self.oidc = OidcProviders(self.settings.oidc, self.settings.oidc_timeout_seconds)
        self.catalog = CatalogCache(self.db, self.settings.catalog_cache_seconds)
        self.queue_caps = QueueCaps(
            self.db,
            default_cap=self.settings.max_queued_jobs_per_model,
            ttl_seconds=self.settings.queue_depth_cache_seconds,
        )
        self.streams = StreamSlots(self.settings.max_streams_per_user)


def api_body(job: Job) -> dict[str, Any]:
    """The default webhook body: the job as ``GET /api/jobs/{id}`` shows it."""
    return job_read(job).model_dump(mode="json")


def job_hooks(predictors: Mapping[str, type[Predictor]]) -> dict[str, JobHooks]:
    """What features do around the runs of their models (see :mod:`mlservice.jobs.hooks`), by the
    slug of each installed model they were written for (another model under the same slug, a test
    stand-in say, gets none)."""
    by_class = face_hooks()
    return {
        slug: hooks
        for slug, cls in predictors.items()
        for model, hooks in by_class.items()
        if issubclass(cls, model)
    }


def build_components(
    settings: Settings,
    predictors: Mapping[str, type[Predictor]] | None = None,
    metrics: ServiceMetrics | None = None,
) -> Components:
    """Everything a process needs, created but not started: nothing connects yet."""
    metrics = metrics if metrics is not None else ServiceMetrics()
    configure_auth(cookie_secure=settings.cookie_secure, lifetime_seconds=settings.jwt_lifetime_seconds)
    db = Database(settings.resolved_database_url, echo=settings.database_echo)
    runtime.configure(
        intra_op_num_threads=settings.inference_threads or None, allow_spinning=settings.inference_spinning
    )
    predictors = dict(predictors) if predictors is not None else discover_predictors()
    pool = PredictorPool(
        predictors,
        settings.resolved_model_cache_dir,
        vector_index=VectorIndexFactory(settings.vector_index, settings.resolved_vector_index_url),
    )
    queue: JobQueue = (
        RabbitMQQueue(settings.broker_url, delivery_limit=settings.broker_delivery_limit)
        if settings.broker_url
        else InProcessQueue()
    )
    storage: Storage = (
        DatabaseStorage(db)
        if settings.storage_backend == "database"
        else LocalStorage(settings.resolved_storage_dir)
    )
    # Webhook bodies in the shape of the API that created the job, in every process that can
    # make an event happen (API, worker, bot): each flavour's formatter is registered here.
    outbox.register_formatters(
        db,
        {
            outbox.DEFAULT_FLAVOUR: api_body,
            V1_FLAVOUR: partial(
                prediction_body,
                predictors=predictors,
                links=SignedUrls(settings.jwt_secret_value(), settings.signed_url_lifetime_seconds),
            ),
        },
    )
    publisher = JobPublisher(db, queue)
    events = JobEvents(db)
    workers = None
    retention = None
    if settings.workers > 0:
        executor = JobExecutor(
            db,
            storage,
            pool,
            lease_seconds=settings.job_lease_seconds,
            max_attempts=settings.job_max_attempts,
            telemetry=JobTelemetry(metrics, pool.classes),
            hooks=job_hooks(predictors),
            backoff=Backoff(settings.job_retry_base_seconds, settings.job_retry_max_seconds),
        )
        # A cancel heard in this process (from any process) stops the predictor running the job.
        events.on_canceled(executor.live.cancel)
        events.on_reconnect(executor.live.look_again)
        workers = JobWorkers(
            db,
            queue,
            executor,
            publisher,
            concurrency=settings.workers,
            max_attempts=settings.job_max_attempts,
            preload=settings.preload_models,
            batching=settings.batching,
            resume_queued=not settings.broker_url,
            sweep_interval_s=settings.sweep_interval_seconds,
            relay_after_s=settings.relay_after_seconds,
        )
        # Beside the lease sweeper: every process that runs workers sweeps (one would do; deletes
        # by id make several at once safe), and an API process that runs none never does.
        retention = RetentionSweeper(
            db,
            storage,
            RetentionPolicy.from_settings(settings),
            metrics,
            interval_s=settings.retention_sweep_interval_seconds,
        )
    deliverer = WebhookDeliverer(
        db,
        timeout_s=settings.webhook_timeout_seconds,
        policy=RetryPolicy(settings.webhook_max_attempts, tuple(settings.webhook_retry_delays)),
        allow_private=settings.webhook_allow_private,
        concurrency=settings.webhook_concurrency,
    )
    return Components(
        settings,
        db,
        storage,
        queue,
        publisher,
        events,
        predictors,
        pool,
        workers,
        metrics,
        deliverer,
        rate_limiter=RateLimiter.from_settings(settings),
        retention=retention,
    )


async def connect_queue(components: Components, *, serves_requests: bool = True) -> None:
    """Connect to the broker and start the publisher, the job events and the deliverer.

    The job events heard from other processes: finishes and changes for the waiters and streams
    of a process that serves requests (a worker process has neither), cancels where workers run.
    """
    if isinstance(components.queue, RabbitMQQueue):
        await components.queue.connect(components.predictors)
    await components.publisher.start()
    channels = [Channel.finished, Channel.changed] if serves_requests else []
    if components.workers is not None:
        channels.append(Channel.canceled)
    await components.events.start(channels)
    if components.webhooks is not None:
        await components.webhooks.start()


async def start_components(components: Components) -> None:
    """Connect, bring the catalog up to date with the installed models, start this process's workers."""
    await connect_queue(components)
    async with components.db.session(write=True) as session:
        await sync_catalog(session, components.predictors)
    await start_workers(components)


async def start_workers(components: Components) -> None:
    """Start this process's workers (if it runs any) and the sweeps beside them."""
    if components.workers is not None:
        await components.workers.start()
    if components.retention is not None:
        await components.retention.start()


async def close_components(components: Components) -> None:
    """Stop in dependency order: workers and the retention sweep, then the publisher's last
    marks, the broker, the database."""
    if components.retention is not None:
        await components.retention.stop()
    if components.workers is not None:
        await components.workers.stop()
    await components.publisher.stop()
    await components.events.stop()
    if components.webhooks is not None:
        await components.webhooks.stop()
    await components.oidc.close()
    await components.queue.close()
    await components.db.dispose()
    if components.rate_limiter is not None:
        await components.rate_limiter.close()


async def dependency_checks(components: Components) -> dict[str, str]:
    """ "ok" or the error, for the database and (when there is one) the broker."""
    checks: dict[str, str] = {}
    try:
        async with components.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    if components.queue.durable:
        checks["broker"] = "ok" if components.queue.connected else "error: not connected"
    return checks


async def readiness(components: Components) -> tuple[bool, dict[str, Any]]:
    """Database reachable, broker connected, and (when preloading) every model this process runs
    loaded; the state of each of those models (none for an API process that runs no jobs)."""
    checks = await dependency_checks(components)
    pool = components.pool
    workers = components.workers
    models = (
        {slug: "loaded" if pool.is_loaded(slug) else "not loaded" for slug in pool.classes}
        if workers is not None
        else {}
    )
    ok = all(value == "ok" for value in checks.values())
    if components.settings.preload_models:
        ok = ok and all(state == "loaded" for state in models.values())
    running = len(workers.executor.running) if workers is not None else 0
    body = {
        "status": "ok" if ok else "unavailable",
        "checks": checks,
        "models": models,
        "running_jobs": running,
    }
    return ok, body


async def scrape_metrics(components: Components) -> bytes:
    """This process's Prometheus exposition, its gauges read first (one grouped COUNT)."""
    queued: dict[str, int] | None
    try:
        async with components.db.session() as session:
            queued = await jobs_repository.count_queued(session)
    except Exception:
        log.warning("could not count the queued jobs for /metrics", exc_info=True)
        queued = None
    components.metrics.refresh(components.pool, queued, running_here=components.workers is not None)
    return components.metrics.exposition()
