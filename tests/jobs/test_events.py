"""A job's event stream, ``GET /api/jobs/{id}/events``: its states as they change (queued, running,
progress, final), then the end; ``Last-Event-ID``; someone else's job; the cap on open streams.

Over a real loopback connection (``serve_in_loop``): httpx's ASGI transport would hand over the
body only once the stream ended."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from tests.conftest import Service
from tests.fixtures.api import submit
from tests.fixtures.live_server import serve_in_loop
from tests.fixtures.predictors import SteppingEcho

FINISHED = {"succeeded", "failed", "canceled", "aborted"}


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of a ``text/event-stream`` answer (comments, the pings, left out)."""
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[field] = f"{event[field]}\n{value}" if field == "data" and field in event else value


async def _steps(service: Service, headers: dict[str, str], steps: int, step_ms: int) -> str:
    params = json.dumps({"steps": steps, "step_ms": step_ms})
    r = await submit(
        service, headers, f"events {uuid.uuid4().hex[:6]}", model=SteppingEcho.slug, params=params
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _all_events(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[dict[str, str]]:
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in sse_events(response)]


async def test_a_stream_shows_the_job_as_it_runs_then_ends(service_factory: Any) -> None:
    async with service_factory([SteppingEcho]) as service, serve_in_loop(service.app) as address:
        headers = await service.user()
        job_id = await _steps(service, headers, steps=8, step_ms=150)
        async with (
            httpx.AsyncClient(base_url=address.url, timeout=30) as client,
            client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["cache-control"] == "no-store"
            events = [event async for event in sse_events(response)]

        assert {e["event"] for e in events} == {"job"}
        jobs = [json.loads(e["data"]) for e in events]
        assert all(j["id"] == job_id for j in jobs)
        statuses = [j["status"] for j in jobs]
        assert statuses[0] in {"queued", "running"}
        assert statuses[-1] == "succeeded"
        assert "running" in statuses
        # Statuses only move forward, and every event says something new.
        assert statuses == sorted(statuses, key=["queued", "running", "succeeded"].index)
        ids = [e["id"] for e in events]
        assert len(set(ids)) == len(ids)
        progress = [j["progress"]["fraction"] for j in jobs if j["status"] == "running" and j["progress"]]
        assert progress, statuses
        assert progress == sorted(progress)
        assert 0 < progress[0] <= 1
        final = jobs[-1]
        assert final["output"] == {"echo": final["input"]["text"].upper(), "steps": 8}
        # The stream gave back its slot and its watcher.
        components = service.app.state.components
        assert components.events._watchers == {}
        assert components.streams._open == {}


async def test_last_event_id_skips_the_state_the_client_has(service_factory: Any) -> None:
    async with service_factory([SteppingEcho]) as service, serve_in_loop(service.app) as address:
        headers = await service.user()
        job_id = await _steps(service, headers, steps=6, step_ms=150)
        url = f"/api/jobs/{job_id}/events"
        async with httpx.AsyncClient(base_url=address.url, timeout=30) as client:
            async with client.stream("GET", url, headers=headers) as response:
                first = await anext(sse_events(response))
            # A reconnect with the first event's id starts with whatever came after it.
            resumed = await _all_events(client, url, headers | {"Last-Event-ID": first["id"]})
            assert resumed
            assert first["id"] not in {e["id"] for e in resumed}
            final = resumed[-1]
            assert json.loads(final["data"])["status"] == "succeeded"

            # Finished: the final state once, unless the client already has it (204: no reconnect).
            again = await _all_events(client, url, headers | {"Last-Event-ID": "stale"})
            assert [e["id"] for e in again] == [final["id"]]
            done = await client.get(url, headers=headers | {"Last-Event-ID": final["id"]})
            assert done.status_code == 204


async def test_someone_elses_job_is_not_found_before_anything_is_streamed(service_factory: Any) -> None:
    async with service_factory([SteppingEcho]) as service:
        owner = await service.user()
        job_id = await _steps(service, owner, steps=1, step_ms=0)
        stranger = await service.user()
        for url in (f"/api/jobs/{job_id}/events", f"/api/jobs/{uuid.uuid4()}/events"):
            r = await service.client.get(url, headers=stranger)
            assert r.status_code == 404
            assert r.headers["content-type"] == "application/json"
            assert r.json()["error"]["code"] == "job_not_found"
        assert (await service.client.get(f"/api/jobs/{job_id}/events")).status_code == 401
        assert service.app.state.components.streams._open == {}


async def test_a_user_has_a_bounded_number_of_open_streams(service_factory: Any) -> None:
    async with (
        service_factory([SteppingEcho], max_streams_per_user=1) as service,
        serve_in_loop(service.app) as address,
    ):
        headers = await service.user()
        other = await service.user()
        job_id = await _steps(service, headers, steps=400, step_ms=25)
        url = f"/api/jobs/{job_id}/events"
        streams = service.app.state.components.streams
        async with httpx.AsyncClient(base_url=address.url, timeout=30) as client:
            async with client.stream("GET", url, headers=headers) as response:
                # Kept: an iterator collected would close the response.
                events = sse_events(response)
                assert (await anext(events))["event"] == "job"
                assert streams.count(next(iter(streams._open))) == 1
                refused = await client.get(url, headers=headers)
                assert refused.status_code == 429
                assert refused.json()["error"]["code"] == "too_many_streams"
                assert refused.headers["retry-after"] == "5"
                # The cap is each user's.
                assert (
                    await client.get(f"/api/jobs/{uuid.uuid4()}/events", headers=other)
                ).status_code == 404
            # The client went away: its slot comes back.
            for _ in range(200):
                if not streams._open:
                    break
                await asyncio.sleep(0.025)
            assert streams._open == {}
            assert service.app.state.components.events._watchers == {}
            r = await client.post(f"/api/jobs/{job_id}/cancel", headers=headers)
            assert r.status_code == 200, r.text
            final = await _all_events(client, url, headers)
            assert json.loads(final[-1]["data"])["status"] == "canceled"
