"""``mlservice worker``: consume jobs from RabbitMQ until SIGTERM, then finish what is running."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping

from mlservice.app import build_components, close_components, connect_queue
from mlservice.predictors.base import Predictor
from mlservice.predictors.registry import discover_predictors
from mlservice.settings import Settings

log = logging.getLogger(__name__)


async def run_worker(
    settings: Settings,
    models: list[str] | None = None,
    *,
    predictors: Mapping[str, type[Predictor]] | None = None,
) -> None:
    """Serve ``models`` (default: all) of ``predictors`` (default: the installed ones)."""
    if not settings.broker_url:
        raise SystemExit("error: `mlservice worker` needs MLSERVICE_BROKER_URL (amqp://...)")
    predictors = dict(predictors) if predictors is not None else discover_predictors()
    if models:
        unknown = sorted(set(models) - set(predictors))
        if unknown:
            raise SystemExit(f"error: unknown model(s): {', '.join(unknown)}")
        predictors = {slug: predictors[slug] for slug in models}
    components = build_components(
        settings.model_copy(update={"workers": max(settings.workers, 1)}), predictors
    )
    workers = components.workers
    assert workers is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await connect_queue(components)
    try:
        await workers.start()
        log.info("worker serving %s", ", ".join(sorted(predictors)))
        await stop.wait()
        log.info("stopping: finishing running batches")
    finally:
        await close_components(components)
