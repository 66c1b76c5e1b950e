"""Helpers for the observability tests: reading a Prometheus exposition, submitting echo jobs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Service

# The worker-process tests need the broker fixtures.
from tests.fixtures.broker import broker_url, worker_env  # noqa: F401

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def scrape(service: Service) -> Samples:
    r = await service.client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse_metrics(r.text)


async def scrape_until(service: Service, ready: Callable[[Samples], bool], within: float = 10.0) -> Samples:
    """Scrape until ``ready`` holds: a job's metrics land just after its commit, which a poll of
    the job can see first."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        samples = await scrape(service)
        if ready(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def submit_echo(
    service: Service, headers: dict[str, str], text: str, request_id: str | None = None, **params: Any
) -> Any:
    extra = {"X-Request-ID": request_id} if request_id is not None else {}
    data = {"model": "test-echo", "text": text}
    if params:
        data["params"] = json.dumps(params)
    return await service.client.post("/api/jobs", data=data, headers=headers | extra)
