"""The application factory. Nothing is created at import time: engines, queues and models
come to life in the lifespan, from the settings given to :func:`create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from mlservice import __version__
from mlservice.admin.router import router as admin_router
from mlservice.apikeys.router import router as apikeys_router
from mlservice.bot.router import router as telegram_router
from mlservice.bot.webhook import TelegramWebhook
from mlservice.bot.webhook import router as telegram_webhook_router
from mlservice.catalog.router import router as catalog_router
from mlservice.components import Components, build_components, close_components, start_components
from mlservice.docs import install_docs
from mlservice.errors import error_responses, install_error_handlers
from mlservice.faces.router import router as faces_router
from mlservice.health import metrics_router
from mlservice.health import router as health_router
from mlservice.jobs.router import router as jobs_router
from mlservice.observability.metrics import ServiceMetrics
from mlservice.predictors.base import Predictor
from mlservice.replicate.router import router as replicate_router
from mlservice.security.install import install_edge
from mlservice.settings import Settings
from mlservice.users.router import router as users_router
from mlservice.wallet.router import router as wallet_router
from mlservice.web.install import install_web
from mlservice.webhooks.router import router as webhooks_router

log = logging.getLogger(__name__)


def telegram_webhook(settings: Settings, components: Components) -> TelegramWebhook | None:
    """The bot in this process, fed by the webhook route, when a webhook URL is configured."""
    if not settings.telegram_webhook_enabled():
        return None
    from mlservice.bot.notifier import ChatNotifier
    from mlservice.bot.runner import create_bot, create_dispatcher

    assert settings.telegram_token is not None
    assert settings.telegram_webhook_secret is not None
    bot = create_bot(settings.telegram_token.get_secret_value(), settings.telegram_api_url)
    hook = TelegramWebhook(
        bot,
        create_dispatcher(components),
        settings.telegram_webhook_secret.get_secret_value(),
        notifier=ChatNotifier(components, bot),
    )
    hook.start()
    return hook


def create_app(
    settings: Settings | None = None, *, predictors: Mapping[str, type[Predictor]] | None = None
) -> FastAPI:
    """Build the app; ``predictors`` replaces the discovered ones (embedding, tests)."""
    settings = settings or Settings()
    settings.telegram_webhook_enabled()  # fail fast on a webhook without its token or secret
    settings.jwt_secret_value()  # fail fast on a bad secret, and create it before the first request
    metrics = ServiceMetrics()  # this app's own registry: apps never share series

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        components = build_components(settings, predictors, metrics)
        app.state.components = components
        await start_components(components)
        app.state.telegram = telegram_webhook(settings, components)
        try:
            yield
        finally:
            if app.state.telegram is not None:
                await app.state.telegram.close()
            await close_components(components)

    app = FastAPI(
        title="mlservice",
        version=__version__,
        description="Pay-per-prediction ML models: submit jobs, pay per run in credits.",
        lifespan=lifespan,
        # Served by install_docs, from the app's own assets (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    install_docs(app)
    install_error_handlers(app)
    install_edge(app, settings, metrics)
    # Every API error, request validation included, has our error body (see install_error_handlers).
    api = APIRouter(prefix="/api", responses=error_responses(422))
    # The routes of a job's round trip first: a request is matched against the routes in order.
    api.include_router(jobs_router)
    api.include_router(users_router)
    api.include_router(wallet_router)
    api.include_router(catalog_router)
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
