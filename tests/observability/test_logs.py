"""Log formats: JSON parses line by line with the bound fields; console lines read as key=value."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from mlservice.observability.context import bind
from mlservice.observability.logs import ConsoleFormatter, JsonFormatter, configure_logging
from tests.conftest import Service, wait_for_job
from tests.observability.conftest import submit_echo


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Everything logged under ``mlservice`` during the test, as the JSON format writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("mlservice")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def parse(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_configure_logging_json_writes_one_object_per_line() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    try:
        configure_logging("info", "json", stream)
        log = logging.getLogger("mlservice.test")
        with bind(request_id="req-1", model="m"):
            log.info("thing.happened", extra={"job_id": "j-1", "attempt": 2, "note": 'a "quoted"\nline'})
        log.debug("not at info")
        try:
            raise ValueError("bad")
        except ValueError:
            log.exception("it failed for %s", "reasons")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = parse(stream)
    assert set(first) == {
        "timestamp",
        "level",
        "event",
        "logger",
        "request_id",
        "model",
        "job_id",
        "attempt",
        "note",
    }
    assert first["event"] == "thing.happened"
    assert (first["level"], first["logger"]) == ("info", "mlservice.test")
    assert [first[key] for key in ("request_id", "model", "job_id", "attempt")] == ["req-1", "m", "j-1", 2]
    assert first["note"] == 'a "quoted"\nline'
    assert first["timestamp"].endswith("+00:00")
    assert second["event"] == "it failed for reasons"
    assert second["level"] == "error"
    assert "ValueError: bad" in second["exception"]
    assert "request_id" not in second  # the binding ended with its block


def test_console_format_is_readable() -> None:
    record = logging.LogRecord("mlservice.http", logging.INFO, __file__, 1, "http.request", None, None)
    record.__dict__.update({"route": "/api/jobs/{job_id}", "status": 200, "note": "two words"})
    with bind(request_id="abc"):
        line = ConsoleFormatter().format(record)
    assert line.endswith(
        "INFO mlservice.http: http.request"
        ' request_id=abc route=/api/jobs/{job_id} status=200 note="two words"'
    )


def test_a_field_never_replaces_the_core_keys() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "the event", None, None)
    record.__dict__["level"] = "spoofed"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["level"], entry["event"]) == ("warning", "the event")


async def test_service_logs_parse_as_json(service: Service, json_lines: io.StringIO) -> None:
    headers = await service.user()
    request_id = "json-lines-1"
    r = await submit_echo(service, headers, "boom", request_id=request_id)
    job_id = r.json()["id"]
    assert (await wait_for_job(service.client, headers, job_id))["status"] == "failed"

    entries = parse(json_lines)
    for entry in entries:
        assert {"timestamp", "level", "event", "logger"} <= set(entry)
    submit = next(e for e in entries if e["event"] == "http.request" and e["route"] == "/api/jobs")
    assert submit["request_id"] == request_id
    assert (submit["method"], submit["status"]) == ("POST", 201)
    assert "user_id" in submit
    assert "password" not in json_lines.getvalue()

    # Every step of the job, the model's own traceback included, carries the submit's request id.
    of_job = [e for e in entries if e.get("job_id") == job_id]
    assert [e["event"] for e in of_job if e["logger"] == "mlservice.jobs.events"] == [
        "job.queued",
        "job.running",
        "job.retry",
        "job.running",
        "job.retry",
        "job.running",
        "job.dead_lettered",
    ]
    assert all(e["request_id"] == request_id for e in of_job)
    crashes = [e for e in of_job if e["logger"] == "mlservice.jobs.executor"]
    assert len(crashes) == 3
    assert all("the model exploded" in e["exception"] for e in crashes)
    dead = of_job[-1]
    assert (dead["level"], dead["attempt"], dead["error_code"]) == ("error", 3, "prediction_failed")
