"""``mlservice worker``: consume jobs from RabbitMQ until SIGTERM, then finish what is running."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from mlservice import __version__
from mlservice.components import (
    Components,
    build_components,
    close_components,
    connect_queue,
    readiness,
    scrape_metrics,
    start_workers,
)
from mlservice.errors import AppError
from mlservice.observability.access import check_metrics_access
from mlservice.observability.metrics import CONTENT_TYPE
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
    assert components.workers is not None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Nobody here waits on a job (that is the API's and the bot's): no LISTEN connection.
    await connect_queue(components, serves_requests=False)
    health: asyncio.Server | None = None
    try:
        await start_workers(components)
        if settings.worker_health_port:
            health = await serve_health(components, settings.host, settings.worker_health_port)
        log.info("worker serving %s", ", ".join(sorted(predictors)))
        await stop.wait()
        log.info("stopping: finishing running batches")
    finally:
        if health is not None:
            health.close()
        await close_components(components)


async def serve_health(components: Components, host: str, port: int) -> asyncio.Server:
    """A minimal HTTP/1.1 responder for orchestrators: GET /health (alive) and GET /ready, and
    GET /metrics for Prometheus (unless metrics are disabled)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            authorization = None
            while line := (await asyncio.wait_for(reader.readline(), 5)).strip():
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "authorization":
                    authorization = value.strip()
            parts = request.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
            content_type, payload = "application/json", b""
            body: dict[str, Any] | None
            if method not in ("GET", "HEAD"):
                status, body = 405, {"status": "method not allowed"}
            elif path == "/metrics" and components.settings.metrics_enabled:
                peer = writer.get_extra_info("peername")
                token = components.settings.metrics_token
                try:
                    check_metrics_access(
                        authorization,
                        peer[0] if isinstance(peer, tuple) else None,
                        token.get_secret_value() if token is not None else None,
                    )
                except AppError as exc:
                    status, body = exc.status_code, {"status": exc.message}
                else:
                    status, body = 200, None
                    content_type, payload = CONTENT_TYPE, await scrape_metrics(components)
            elif path == "/health":
                status, body = 200, {"status": "ok", "version": __version__}
            elif path == "/ready":
                ok, body = await readiness(components)
                status = 200 if ok else 503
            else:
                status, body = 404, {"status": "not found"}
            if body is not None:
                payload = json.dumps(body).encode()
            head = (
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + (b"" if method == "HEAD" else payload))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    log.info("worker health on http://%s:%d/health, /ready and /metrics", host, port)
    return server
