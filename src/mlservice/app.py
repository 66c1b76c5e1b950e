"""The application factory. Nothing is created at import time: engines, queues and models
come to life in the lifespan, from the settings given to :func:`create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import APIRouter, FastAPI

from mlservice import __version__
from mlservice.admin.router import router as admin_router
from mlservice.apikeys.auth import KeyUses
from mlservice.apikeys.router import router as apikeys_router
from mlservice.bot.router import router as telegram_router
from mlservice.bot.webhook import TelegramWebhook
from mlservice.bot.webhook import router as telegram_webhook_router
from mlservice.catalog.router import router as catalog_router
from mlservice.catalog.service import sync_catalog
from mlservice.db import Database
from mlservice.errors import error_responses, install_error_handlers
from mlservice.faces.router import router as faces_router
from mlservice.health import router as health_router
from mlservice.jobs.dispatch import JobPublisher
from mlservice.jobs.events import JobEvents
from mlservice.jobs.executor import JobExecutor
from mlservice.jobs.router import router as jobs_router
from mlservice.jobs.workers import JobWorkers
from mlservice.observability.http import RequestObservability
from mlservice.observability.http import router as metrics_router
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
from mlservice.replicate.router import router as replicate_router
from mlservice.security.install import install_proxy_headers, install_security
from mlservice.security.ratelimit import RateLimiter
from mlservice.settings import Settings
from mlservice.storage.base import Storage
from mlservice.storage.database import DatabaseStorage
from mlservice.storage.local import LocalStorage
from mlservice.users.auth import configure_auth
from mlservice.users.router import router as users_router
from mlservice.wallet.router import router as wallet_router
from mlservice.web.install import install_web
from mlservice.webhooks.deliverer import RetryPolicy, WebhookDeliverer
from mlservice.webhooks.router import router as webhooks_router

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
    workers: JobWorkers | None
    metrics: ServiceMetrics = field(default_factory=ServiceMetrics)
    webhooks: WebhookDeliverer | None = None
    api_key_uses: KeyUses = field(default_factory=KeyUses)


def build_components(
    settings: Settings,
    predictors: Mapping[str, type[Predictor]] | None = None,
    metrics: ServiceMetrics | None = None,
) -> Components:
    metrics = metrics if metrics is not None else ServiceMetrics()
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
    publisher = JobPublisher(db, queue)
    events = JobEvents(db)
    workers = None
    if settings.workers > 0:
        executor = JobExecutor(
            db,
            storage,
            pool,
            lease_seconds=settings.job_lease_seconds,
            max_attempts=settings.job_max_attempts,
            telemetry=JobTelemetry(metrics, pool.classes),
        )
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
    deliverer = WebhookDeliverer(
        db,
        timeout_s=settings.webhook_timeout_seconds,
        policy=RetryPolicy(settings.webhook_max_attempts, tuple(settings.webhook_retry_delays)),
        allow_private=settings.webhook_allow_private,
        concurrency=settings.webhook_concurrency,
    )
    return Components(
        settings, db, storage, queue, publisher, events, predictors, pool, workers, metrics, deliverer
    )


async def connect_queue(components: Components) -> None:
    if isinstance(components.queue, RabbitMQQueue):
        await components.queue.connect(components.predictors)
    await components.publisher.start()
    await components.events.start()
    if components.webhooks is not None:
        await components.webhooks.start()


async def close_components(components: Components) -> None:
    """Stop in dependency order: workers, then the publisher's last marks, the broker, the database."""
    if components.workers is not None:
        await components.workers.stop()
    await components.publisher.stop()
    await components.events.stop()
    if components.webhooks is not None:
        await components.webhooks.stop()
    await components.queue.close()
    await components.db.dispose()


def telegram_webhook(settings: Settings, components: Components) -> TelegramWebhook | None:
    """The bot in this process, fed by the webhook route, when a webhook URL is configured."""
    if not settings.telegram_webhook_enabled():
        return None
    from mlservice.bot.runner import create_bot, create_dispatcher

    assert settings.telegram_token is not None
    assert settings.telegram_webhook_secret is not None
    bot = create_bot(settings.telegram_token.get_secret_value(), settings.telegram_api_url)
    return TelegramWebhook(
        bot, create_dispatcher(components), settings.telegram_webhook_secret.get_secret_value()
    )


def create_app(
    settings: Settings | None = None, *, predictors: Mapping[str, type[Predictor]] | None = None
) -> FastAPI:
    """Build the app; ``predictors`` replaces the discovered ones (embedding, tests)."""
    settings = settings or Settings()
    settings.telegram_webhook_enabled()  # fail fast on a webhook without its token or secret
    settings.jwt_secret_value()  # fail fast on a bad secret, and create it before the first request
    configure_auth(cookie_secure=settings.cookie_secure, lifetime_seconds=settings.jwt_lifetime_seconds)
    metrics = ServiceMetrics()  # this app's own registry: apps never share series

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        components = build_components(settings, predictors, metrics)
        app.state.components = components
        await connect_queue(components)
        async with components.db.session(write=True) as session:
            await sync_catalog(session, components.predictors)
        if components.workers is not None:
            await components.workers.start()
        app.state.rate_limiter = RateLimiter.from_settings(settings)
        app.state.telegram = telegram_webhook(settings, components)
        try:
            yield
        finally:
            if app.state.telegram is not None:
                await app.state.telegram.close()
            await close_components(components)
            await app.state.rate_limiter.close()

    app = FastAPI(
        title="mlservice",
        version=__version__,
        description="Pay-per-prediction ML models: submit jobs, pay per run in credits.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_security(app, settings)
    app.add_middleware(RequestObservability, metrics=metrics)
    install_proxy_headers(app, settings)  # outermost
    # Every API error, request validation included, has our error body (see install_error_handlers).
    api = APIRouter(prefix="/api", responses=error_responses(422))
    api.include_router(users_router)
    api.include_router(wallet_router)
    api.include_router(catalog_router)
    api.include_router(jobs_router)
    api.include_router(webhooks_router)
    api.include_router(faces_router)
    api.include_router(apikeys_router)
    api.include_router(telegram_router)
    # 400: a request body that cannot be decoded.
    api.include_router(admin_router, responses=error_responses(400, 401, 403, 404, 409))
    app.include_router(api)
    # Replicate's HTTP API, for its clients; errors in its own shape (see ReplicateRoute).
    app.include_router(replicate_router)
    app.include_router(health_router)
    app.include_router(telegram_webhook_router)
    if settings.metrics_enabled:
        app.include_router(metrics_router)
    install_web(app)  # last: its pages answer errors as HTML, the API's stay JSON
    return app
