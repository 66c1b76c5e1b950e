"""Replicate's official JavaScript client (npm ``replicate``, pinned in tests/js/package-lock.json and
installed by ``make test``: ``make js-client``) against a live ``mlservice serve``: each test runs a
node script that prints its findings as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.fixtures.api import totals
from tests.replicate.conftest import Account, refill
from tests.web.conftest import LiveServer

JS_DIR = ROOT / "tests" / "js"
CAT_CLASS_IDS = range(281, 286)

PRELUDE = """
const fs = require("fs");
const Replicate = require("replicate");
const replicate = new Replicate({ auth: process.env.TOKEN, baseUrl: process.env.BASE_URL + "/v1" });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(id, done) {
  for (let i = 0; i < 600; i++) {
    const prediction = await replicate.predictions.get(id);
    if (done(prediction)) return prediction;
    await sleep(50);
  }
  throw new Error(`prediction ${id} never got there`);
}
"""
EPILOGUE = """
main().then(
  (found) => process.stdout.write(JSON.stringify(found ?? null)),
  (error) => { console.error(error && error.stack ? error.stack : error); process.exit(1); },
);
"""


def tls_env(server: LiveServer) -> dict[str, str]:
    """Node trusts the tests' CA for a server on https."""
    return {"NODE_EXTRA_CA_CERTS": str(server.tls.ca_file)} if server.tls is not None else {}


def node(server: LiveServer, token: str, script: str, **env: str) -> Any:
    """Run ``async function main()`` of ``script`` with the client at hand; what it returns."""
    if shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    if not (JS_DIR / "node_modules" / "replicate" / "package.json").is_file():
        pytest.fail("the JavaScript client is not installed: run `make js-client` (npm ci in tests/js)")
    result = subprocess.run(
        ["node", "-e", PRELUDE + script + EPILOGUE],
        cwd=JS_DIR,
        env=os.environ | {"TOKEN": token, "BASE_URL": server.url} | tls_env(server) | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_installed_client_is_the_pinned_one() -> None:
    installed = json.loads((JS_DIR / "node_modules" / "replicate" / "package.json").read_text())
    assert installed["version"] == "1.4.0"


def test_run_with_a_buffer_a_blob_and_a_data_uri(
    replicate_server: LiveServer, account: Account, tmp_path: Path, chelsea_jpeg: bytes
) -> None:
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(chelsea_jpeg)
    found = node(
        replicate_server,
        account.key,
        """
async function main() {
  const bytes = fs.readFileSync(process.env.PHOTO);
  const model = "mlservice/image-classification";
  const buffer = await replicate.run(model, { input: { image: bytes, top_k: 1 } });
  const blob = await replicate.run(model, {
    input: { image: new Blob([bytes], { type: "image/jpeg" }), top_k: 1 },
  });
  const uri = `data:image/jpeg;base64,${bytes.toString("base64")}`;
  const dataUri = await replicate.run(model, { input: { image: uri, top_k: 2 } });
  const files = [];
  for await (const page of replicate.paginate(replicate.files.list)) files.push(...page);
  return { buffer, blob, dataUri, files: files.map((f) => [f.content_type, f.size]) };
}
""",
        PHOTO=str(photo),
    )
    for name, top_k in (("buffer", 1), ("blob", 1), ("dataUri", 2)):
        predictions = found[name]["predictions"]
        assert len(predictions) == top_k, found
        assert predictions[0]["class_id"] in CAT_CLASS_IDS, found
    # Buffer and Blob went up first (POST /v1/files), the data URI inline.
    assert [size for _, size in found["files"]] == [len(chelsea_jpeg)] * 2


def test_file_outputs_read_as_file_output(
    replicate_tls_server: LiveServer, tls_account: Account, tmp_path: Path, chelsea_jpeg: bytes
) -> None:
    photo = tmp_path / "chelsea.jpg"
    photo.write_bytes(chelsea_jpeg)
    found = node(
        replicate_tls_server,
        tls_account.key,
        """
async function main() {
  const output = await replicate.run("mlservice/background-removal", {
    input: { image: fs.readFileSync(process.env.PHOTO) },
  });
  const cutout = output.files.cutout;
  // A FileOutput (of https URLs): the client reads it with a plain fetch, no Authorization.
  const blob = await cutout.blob();
  const head = Buffer.from(await blob.arrayBuffer()).subarray(0, 4).toString("hex");
  const bare = new URL(cutout.url());
  bare.search = "";
  return {
    isFileOutput: cutout instanceof ReadableStream && typeof cutout.blob === "function",
    url: cutout.url().href,
    type: blob.type,
    head,
    bytes: blob.size,
    bare: (await fetch(bare)).status,
  };
}
""",
        PHOTO=str(photo),
    )
    assert found["isFileOutput"] is True, found
    assert found["url"].startswith(f"{replicate_tls_server.url}/api/jobs/"), found
    assert (found["type"], found["head"]) == ("image/png", "89504e47"), found
    assert found["bytes"] > 1000, found
    assert found["bare"] == 401, found  # the path without the link's token is its owner's alone


def test_stream_runs_a_model_and_streams_its_output(replicate_server: LiveServer, account: Account) -> None:
    found = node(
        replicate_server,
        account.key,
        """
async function main() {
  const events = [];
  for await (const event of replicate.stream("mlservice/test-steps", {
    input: { text: "stream me", steps: 4, step_ms: 50 },
  })) {
    events.push({ event: event.event, data: event.data, id: event.id });
  }
  return events;
}
""",
    )
    assert [e["event"] for e in found] == ["logs"] * 4 + ["output", "done"], found
    *logs, output, done = found
    assert [e["data"] for e in logs] == [f"finished step {n} of 4" for n in range(1, 5)]
    assert json.loads(output["data"]) == {"echo": "STREAM ME", "steps": 4}
    assert json.loads(done["data"]) == {}
    assert all(e["id"] for e in found), found


def test_pagination_of_predictions(replicate_server: LiveServer, account: Account) -> None:
    refill(replicate_server, account, 400)
    found = node(
        replicate_server,
        account.key,
        """
async function main() {
  const made = [];
  for (let i = 0; i < 101; i++) {
    const p = await replicate.predictions.create({
      model: "mlservice/test-echo", input: { text: `page ${i}` }, wait: 30,
    });
    made.push(p.id);
  }
  const pages = [];
  for await (const page of replicate.paginate(replicate.predictions.list)) pages.push(page.map((p) => p.id));
  return { made, pages };
}
""",
    )
    assert [len(page) for page in found["pages"]] == [100, 1]
    listed = [i for page in found["pages"] for i in page]
    assert listed == list(reversed(found["made"]))  # newest first, none twice


def test_the_default_webhook_secret(replicate_server: LiveServer, account: Account) -> None:
    found = node(
        replicate_server,
        account.key,
        "async function main() { return replicate.webhooks.default.secret.get(); }",
    )
    api = httpx.get(f"{replicate_server.url}/api/webhooks/secret", headers=account.headers)
    assert found["key"].startswith("whsec_")
    assert found["key"] == api.json()["secret"]


def test_a_wrong_key_is_refused(replicate_server: LiveServer) -> None:
    found = node(
        replicate_server,
        "mls_not-a-real-key",
        """
async function main() {
  try {
    await replicate.predictions.list();
  } catch (error) {
    return { name: error.name, status: error.response && error.response.status, message: error.message };
  }
  return "not refused";
}
""",
    )
    assert found["name"] == "ApiError", found
    assert found["status"] == 401
    assert "401" in found["message"]


def test_cancel_a_running_prediction(replicate_server: LiveServer, account: Account) -> None:
    found = node(
        replicate_server,
        account.key,
        """
async function main() {
  const created = await replicate.predictions.create({
    model: "mlservice/test-steps", input: { text: "cancel me", steps: 400, step_ms: 25 },
  });
  const running = await until(created.id, (p) => p.status === "processing");
  const canceled = await replicate.predictions.cancel(created.id);
  const after = await replicate.predictions.get(created.id);
  return { running: running.status, canceled: canceled.status, after: after.status, output: after.output };
}
""",
    )
    assert found == {"running": "processing", "canceled": "canceled", "after": "canceled", "output": None}
    wallet = httpx.get(f"{replicate_server.url}/api/wallet", headers=account.headers).json()
    assert totals(wallet) == {"balance": 100, "held": 0, "available": 100}


def test_run_stopped_by_an_abort_signal(replicate_server: LiveServer, account: Account) -> None:
    found = node(
        replicate_server,
        account.key,
        """
async function main() {
  const controller = new AbortController();
  const seen = [];
  setTimeout(() => controller.abort(), 1500);
  const output = await replicate.run(
    "mlservice/test-steps",
    { input: { text: "abort me", steps: 400, step_ms: 25 }, signal: controller.signal,
      wait: { mode: "poll", interval: 100 } },
    (prediction) => seen.push(prediction.status),
  );
  const [latest] = (await replicate.predictions.list()).results;
  return { output, seen: [...new Set(seen)], latest: latest.status };
}
""",
    )
    assert found["output"] is None
    assert "processing" in found["seen"]
    assert found["seen"][-1] == "canceled"
    assert found["latest"] == "canceled"
    wallet = httpx.get(f"{replicate_server.url}/api/wallet", headers=account.headers).json()
    assert wallet["balance"] == 100
