"""Replicate's own Python client against a live ``mlservice serve``: what tests/replicate/test_client.py
leaves out (there: an open file and a data URI as inputs, the webhook secret, wrong keys). Here: a
running prediction canceled, bytes as a file input, a file output read through ``FileOutput``, and
pagination of predictions."""

from __future__ import annotations

import io
import time

import httpx
from replicate.helpers import FileOutput
from replicate.pagination import paginate

from tests.fixtures.api import totals
from tests.replicate.conftest import Account, data_uri, refill
from tests.web.conftest import LiveServer

CAT_CLASS_IDS = range(281, 286)


def wallet(server: LiveServer, account: Account) -> dict[str, int]:
    return totals(httpx.get(f"{server.url}/api/wallet", headers=account.headers).json())


def test_cancel_a_running_prediction(replicate_server: LiveServer, account: Account) -> None:
    client = account.client
    prediction = client.predictions.create(
        model="mlservice/test-steps", input={"text": "cancel me", "steps": 400, "step_ms": 25}
    )
    deadline = time.monotonic() + 30
    while prediction.status != "processing":
        assert time.monotonic() < deadline, prediction.status
        time.sleep(0.05)
        prediction.reload()
    prediction.cancel()
    assert prediction.status == "canceled"
    again = client.predictions.get(prediction.id)
    assert again.status == "canceled"
    assert again.output is None
    assert wallet(replicate_server, account) == {"balance": 100, "held": 0, "available": 100}


def test_bytes_and_a_data_uri_as_file_inputs(account: Account, chelsea_jpeg: bytes) -> None:
    model = "mlservice/image-classification"
    uploaded = account.client.run(model, input={"image": io.BytesIO(chelsea_jpeg), "top_k": 1})
    assert uploaded["predictions"][0]["class_id"] in CAT_CLASS_IDS
    assert [f.size for f in account.client.files.list()] == [len(chelsea_jpeg)]
    inline = account.client.run(model, input={"image": data_uri(chelsea_jpeg), "top_k": 2})
    assert len(inline["predictions"]) == 2
    assert inline["predictions"][0]["class_id"] in CAT_CLASS_IDS
    assert len(account.client.files.list()) == 1  # a data URI goes inline


def test_a_file_output_read_through_the_client(
    replicate_tls_server: LiveServer, tls_account: Account, chelsea_jpeg: bytes
) -> None:
    server, client = replicate_tls_server, tls_account.client
    photo = io.BytesIO(chelsea_jpeg)
    output = client.run("mlservice/background-removal", input={"image": photo})
    cutout = output["files"]["cutout"]
    # On https the client makes a FileOutput of the link, as it does of Replicate's.
    assert isinstance(cutout, FileOutput)
    assert cutout.url.startswith(f"{server.url}/api/jobs/")
    content = cutout.read()
    assert content.startswith(b"\x89PNG")
    assert b"".join(cutout) == content
    # The link itself opens without a credential; the bare path does not.
    assert httpx.get(cutout.url, verify=server.verify).content == content
    bare = cutout.url.partition("?")[0]
    assert httpx.get(bare, verify=server.verify).status_code == 401


def test_pagination_of_predictions(replicate_server: LiveServer, account: Account) -> None:
    refill(replicate_server, account, 400)
    made = [
        account.client.predictions.create(model="mlservice/test-echo", input={"text": f"p{i}"}, wait=30).id
        for i in range(101)
    ]
    pages = [[p.id for p in page.results] for page in paginate(account.client.predictions.list)]
    assert [len(page) for page in pages] == [100, 1]
    assert [i for page in pages for i in page] == made[::-1]
