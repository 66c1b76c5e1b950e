"""Replicate's own Python client (PyPI ``replicate``) against a live ``mlservice serve``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from replicate.exceptions import ModelError, ReplicateError

from tests.fixtures.api import totals
from tests.replicate.conftest import Account, make_client
from tests.web.conftest import LiveServer

CAT_CLASS_IDS = range(281, 286)


@pytest.fixture
def chelsea_file(tmp_path: Path, chelsea_jpeg: bytes) -> Path:
    path = tmp_path / "chelsea.jpg"
    path.write_bytes(chelsea_jpeg)
    return path


def wallet(server: LiveServer, account: Account) -> dict[str, int]:
    return totals(httpx.get(f"{server.url}/api/wallet", headers=account.headers).json())


def test_run_classifier_with_an_open_file(
    replicate_server: LiveServer, account: Account, chelsea_file: Path
) -> None:
    with chelsea_file.open("rb") as image:
        output = account.client.run("mlservice/image-classification", input={"image": image, "top_k": 3})
    predictions = output["predictions"]
    assert len(predictions) == 3
    assert predictions[0]["class_id"] in CAT_CLASS_IDS, predictions
    assert "cat" in predictions[0]["label"].lower()
    # The client uploaded the file first (POST /v1/files), then gave its URL as the input.
    uploads = account.client.files.list()
    assert [(f.name, f.size) for f in uploads] == [("chelsea.jpg", chelsea_file.stat().st_size)]
    assert account.client.files.get(uploads[0].id).urls == uploads[0].urls
    assert account.client.files.delete(uploads[0].id)
    assert account.client.files.list() == []
    assert wallet(replicate_server, account)["balance"] == 95


def test_run_classifier_with_a_data_uri(account: Account, chelsea_file: Path) -> None:
    output = account.client.run(
        "mlservice/image-classification",
        input={"image": chelsea_file, "top_k": 1},
        file_encoding_strategy="base64",
    )
    assert output["predictions"][0]["class_id"] in CAT_CLASS_IDS
    assert account.client.files.list() == []


def test_run_the_movie_model(account: Account) -> None:
    output = account.client.run(
        "mlservice/movie-recommendation", input={"text": "a samurai in feudal Japan", "top_k": 3}
    )
    assert output["results"][0]["title"] == "Seven Samurai"
    assert len(output["results"]) == 3
    # Pinned to the version the model page names; `prompt` is the usual name of a text input.
    model = account.client.models.get("mlservice/movie-recommendation")
    assert model.latest_version is not None
    pinned = account.client.run(
        f"mlservice/movie-recommendation:{model.latest_version.id}", input={"prompt": "mafia crime family"}
    )
    assert pinned["results"][0]["title"] == "The Godfather"


def test_background_removal_files_are_links(
    replicate_server: LiveServer, account: Account, chelsea_file: Path
) -> None:
    with chelsea_file.open("rb") as image:
        output = account.client.run("mlservice/background-removal", input={"image": image})
    cutout = output["files"]["cutout"]
    assert cutout.startswith(f"{replicate_server.url}/api/jobs/")
    # The link opens for anyone holding it, as Replicate's file URLs do...
    r = httpx.get(cutout)
    assert r.status_code == 200
    assert r.content.startswith(b"\x89PNG")
    # ...its path without the token for its owner only.
    bare = cutout.partition("?")[0]
    assert httpx.get(bare, headers={"Authorization": f"Bearer {account.key}"}).content == r.content
    assert httpx.get(bare).status_code == 401
    stranger = replicate_server.bearer(replicate_server.register())
    assert httpx.get(bare, headers=stranger).status_code == 404


def test_create_get_list_and_cancel(replicate_server: LiveServer, account: Account) -> None:
    client = account.client
    busy = client.predictions.create(model="mlservice/test-echo", input={"text": "busy", "sleep_ms": 3000})
    assert busy.status == "starting"
    assert not busy.metrics  # {} until it finishes
    deadline = time.monotonic() + 30
    while busy.status != "processing":
        assert time.monotonic() < deadline, busy.status
        time.sleep(0.05)
        busy.reload()
    # The one worker of test-echo is busy: this one stays queued, so it can be canceled.
    version = client.models.get("mlservice/test-echo").latest_version
    assert version is not None
    queued = client.predictions.create(version=version.id, input={"text": "queued"})
    assert queued.status == "starting"
    queued.cancel()
    assert queued.status == "canceled"
    assert client.predictions.get(queued.id).status == "canceled"

    listed = client.predictions.list()
    assert [p.id for p in listed.results] == [queued.id, busy.id]
    assert listed.next is None

    busy.wait()
    assert busy.status == "succeeded"
    assert busy.output["echo"] == "BUSY"
    assert isinstance(busy.metrics, dict)
    assert isinstance(busy.metrics["predict_time"], float)
    assert 3 <= busy.metrics["predict_time"] <= busy.metrics["total_time"]
    assert wallet(replicate_server, account) == {"balance": 97, "held": 0, "available": 97}

    failed = client.predictions.create(model="mlservice/test-echo", input={"text": "boom"}, wait=30)
    failed.wait()
    assert failed.status == "failed"
    assert "exploded" in (failed.error or "")
    with pytest.raises(ModelError):
        client.run("mlservice/test-echo", input={"text": "boom again"})


def test_refusals_are_replicate_errors(replicate_server: LiveServer, account: Account) -> None:
    for token in ("mls_not-a-real-key", "not-a-token"):
        with pytest.raises(ReplicateError) as refused:
            make_client(replicate_server, token).predictions.list()
        assert refused.value.status == 401
        assert refused.value.detail
    with pytest.raises(ReplicateError) as missing:
        account.client.run("mlservice/no-such-model", input={})
    assert missing.value.status == 404
    assert "no-such-model" in (missing.value.detail or "")
    with pytest.raises(ReplicateError) as invalid:
        account.client.run("mlservice/test-echo", input={"text": "x", "colour": "red"})
    assert invalid.value.status == 422


def test_a_login_token_works_as_well(replicate_server: LiveServer, account: Account) -> None:
    jwt = account.headers["Authorization"].removeprefix("Bearer ")
    client = make_client(replicate_server, jwt)
    assert client.accounts.current().username == account.email
    names = [m.name for m in client.models.list().results]
    assert {"image-classification", "movie-recommendation", "test-echo"} <= set(names)
    output = client.run("mlservice/test-echo", input={"text": "jwt"})
    assert output["echo"] == "JWT"


def test_the_webhook_signing_secret(replicate_server: LiveServer, account: Account) -> None:
    """``client.webhooks.default.secret()`` is the account's one secret, that of /api."""
    secret = account.client.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    api = httpx.get(f"{replicate_server.url}/api/webhooks/secret", headers=account.headers)
    assert api.status_code == 200, api.text
    assert secret.key == api.json()["secret"]
    with pytest.raises(ReplicateError) as refused:
        make_client(replicate_server, "mls_not-a-real-key").webhooks.default.secret()
    assert refused.value.status == 401
