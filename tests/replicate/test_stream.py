"""``/v1/predictions/{id}/stream`` with Replicate's own Python client: ``replicate.stream`` (create,
then follow ``urls.stream``) and ``prediction.stream()``, against a live server."""

from __future__ import annotations

import json

import httpx
import pytest
from replicate.stream import ServerSentEvent

from tests.replicate.conftest import Account
from tests.web.conftest import LiveServer

EventType = ServerSentEvent.EventType


def test_replicate_stream_runs_a_model_and_streams_its_output(account: Account) -> None:
    events = list(account.client.stream("mlservice/test-echo", input={"text": "stream me"}))
    assert [e.event for e in events] == [EventType.OUTPUT, EventType.DONE]
    output, done = events
    assert json.loads(str(output))["echo"] == "STREAM ME"
    assert json.loads(done.data) == {}
    assert all(e.id for e in events)


def test_a_finished_predictions_stream_and_someone_elses(
    replicate_server: LiveServer, account: Account
) -> None:
    prediction = account.client.predictions.create(version="mlservice/test-echo", input={"text": "later"})
    stream = f"{replicate_server.url}/v1/predictions/{prediction.id}/stream"
    assert prediction.urls["stream"].startswith(f"{stream}?token=")
    prediction.wait()
    assert prediction.status == "succeeded"
    events = list(prediction.stream())
    assert [e.event for e in events] == [EventType.OUTPUT, EventType.DONE]
    assert json.loads(events[0].data)["echo"] == "LATER"

    # urls.stream opens with no credential (Replicate's JavaScript client sends none); its path
    # without the token is the owner's alone.
    with httpx.stream("GET", prediction.urls["stream"]) as r:
        assert r.status_code == 200
        assert "event: done" in r.read().decode()
    assert httpx.get(stream).status_code == 401
    stranger = replicate_server.bearer(replicate_server.register())
    assert httpx.get(stream, headers=stranger).status_code == 404


@pytest.mark.parametrize("path", ["/v1/predictions/not-an-id/stream"])
def test_an_unknown_prediction_is_not_found(
    replicate_server: LiveServer, account: Account, path: str
) -> None:
    r = httpx.get(f"{replicate_server.url}{path}", headers={"Authorization": f"Bearer {account.key}"})
    assert r.status_code == 404
