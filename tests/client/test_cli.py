"""The ``mlservice`` client against a live ``mlservice serve`` (SQLite, the real classifier, the
cheap ``test-echo`` model and ``test-steps``, which reports progress),
run as a user would: a subprocess per command, a config file of its own."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PASSWORD
from tests.fixtures.live_server import STEPS_PLUGIN, LiveServer, free_port, running_server, unique_email

CAT_CLASS_IDS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@dataclass
class Cli:
    """``mlservice`` as a user runs it, with the config file ``config``."""

    config: Path
    cwd: Path

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MLSERVICE_")}
        return subprocess.run(
            [sys.executable, "-m", "mlservice", *args],
            env=base | {"MLSERVICE_CONFIG": str(self.config), "PYTHONUNBUFFERED": "1"} | env,
            cwd=self.cwd,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def login(self, server: LiveServer, email: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return self(
            "login", "--url", server.url, "--email", email, "--password-stdin", *extra, stdin=f"{PASSWORD}\n"
        )

    def stored(self) -> dict[str, str]:
        return json.loads(self.config.read_text())  # type: ignore[no-any-return]


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr


@pytest.fixture(scope="module")
def cli_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("cli-sqlite")
    url = f"sqlite+aiosqlite:///{workdir / 'mlservice.db'}"
    # A short sweep: a queued job past its deadline is aborted soon after.
    env = {"MLSERVICE_SWEEP_INTERVAL_SECONDS": "0.3"}
    with running_server(
        "cli-server-sqlite", url, model_cache, workdir, env=env, plugins=STEPS_PLUGIN
    ) as server:
        yield server


def new_cli(tmp_path_factory: pytest.TempPathFactory) -> Cli:
    home = tmp_path_factory.mktemp("cli-home")
    return Cli(home / "config" / "client.json", home)


@pytest.fixture(scope="module")
def logged_in(cli_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    cli = new_cli(tmp_path_factory)
    email = cli_server.register()
    result = cli.login(cli_server, email)
    assert result.returncode == 0, result.stderr
    assert f"Logged in to {cli_server.url} as {email}" in result.stdout
    return cli


def test_login_stores_a_key_readable_by_its_owner_only(logged_in: Cli, cli_server: LiveServer) -> None:
    stored = logged_in.stored()
    assert stored["url"] == cli_server.url
    assert stored["api_key"].startswith("mls_")
    assert stat.S_IMODE(logged_in.config.stat().st_mode) == 0o600
    r = httpx.get(f"{cli_server.url}/api/keys", headers={"Authorization": f"Bearer {stored['api_key']}"})
    assert r.status_code == 200
    [key] = r.json()
    assert key["id"] == stored["key_id"]
    assert key["name"].startswith("mlservice CLI on ")


def test_models_lists_the_catalog(logged_in: Cli) -> None:
    result = logged_in("models")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["SLUG", "TITLE", "INPUT", "PRICE"]
    by_slug = {row.split()[0]: row.split() for row in rows}
    assert by_slug["image-classification"][-2:] == ["image", "5"]
    assert by_slug["test-echo"][-2:] == ["text", "3"]


def test_predict_waits_for_the_classifier(logged_in: Cli, chelsea_jpeg: bytes) -> None:
    photo = logged_in.cwd / "chelsea.jpg"
    photo.write_bytes(chelsea_jpeg)
    result = logged_in("predict", "image-classification", f"image=@{photo}", "top_k=3", "--wait")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert len(output["predictions"]) == 3
    top = output["predictions"][0]
    assert top["class_id"] in CAT_CLASS_IDS, top
    assert top["label"]
    # Not a terminal: plain progress lines, then the outcome.
    lines = result.stderr.splitlines()
    assert lines[0].startswith("job ")
    assert ": queued" in lines[0]
    assert "succeeded after" in lines[-1]
    assert "cost 5 credits" in lines[-1]


def test_predict_without_wait_then_job_and_download(logged_in: Cli) -> None:
    result = logged_in("predict", "test-echo", "text=hello there", "sleep_ms=50")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    uuid.UUID(job_id)

    shown = logged_in("job", job_id, "--wait")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["echo"] == "HELLO THERE"
    assert f"mlservice download {job_id} echo" in shown.stderr

    whole = logged_in("job", job_id, "--json")
    assert json.loads(whole.stdout)["params"] == {"sleep_ms": 50}

    saved = logged_in("download", job_id, "echo")
    assert saved.returncode == 0, saved.stderr
    assert (logged_in.cwd / "echo.txt").read_text() == "hello there"
    again = logged_in("download", job_id, "echo")
    assert again.returncode == 2
    assert "exists" in again.stderr

    listed = logged_in("jobs")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "MODEL", "STATUS", "COST", "CREATED", "TIME"]
    assert any(row.split()[:4] == [job_id, "test-echo", "succeeded", "3"] for row in rows)
    only = logged_in("jobs", "--model", "test-echo", "--status", "succeeded", "--limit", "1")
    assert [row.split()[:2] for row in only.stdout.splitlines()[1:]] == [[job_id, "test-echo"]]


def test_a_failed_job_exits_non_zero(logged_in: Cli) -> None:
    result = logged_in("predict", "test-echo", "text=boom", "--wait")
    assert result.returncode == 3, result.stderr
    assert "failed: " in result.stderr
    assert "exploded" in result.stderr
    no_traceback(result)


def test_wait_shows_the_progress_of_a_running_job(logged_in: Cli) -> None:
    result = logged_in("predict", "test-steps", "text=steps", "steps=6", "step_ms=400", "--wait")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"echo": "STEPS", "steps": 6}
    # Not a terminal: a plain line per change, the progress of the running job among them.
    lines = result.stderr.splitlines()
    shown = [line for line in lines if re.search(r": running  \d+%  step \d of 6 \(", line)]
    assert shown, lines
    assert len(shown) == len(set(line.split(" (")[0] for line in shown))  # only when it changed
    assert "succeeded after" in lines[-1]


def test_deadlines_abort_or_cancel_and_charge_nothing(logged_in: Cli) -> None:
    def available() -> int:
        return int(logged_in("balance").stdout.split()[0])

    before = available()
    # Still running at its deadline: canceled.
    late = logged_in(
        "predict", "test-steps", "text=long", "steps=200", "step_ms=50", "--cancel-after", "1s", "--wait"
    )
    assert late.returncode == 3, late.stderr
    assert "was canceled while it ran; nothing was charged" in late.stderr
    # Queued behind a busy worker past its deadline: aborted, never started.
    busy = logged_in("predict", "test-steps", "text=busy", "steps=10", "step_ms=300")
    assert busy.returncode == 0, busy.stderr
    queued = logged_in("predict", "test-steps", "text=queued", "--cancel-after", "1s", "--wait")
    assert queued.returncode == 3, queued.stderr
    assert "was aborted: its deadline (--cancel-after) passed before it started; nothing" in queued.stderr
    assert logged_in("job", busy.stdout.strip(), "--wait").returncode == 0
    listed = logged_in("jobs", "--status", "aborted")
    assert listed.returncode == 0, listed.stderr
    assert [row.split()[1:4] for row in listed.stdout.splitlines()[1:]] == [["test-steps", "aborted", "0"]]
    assert "COST: what was charged" in listed.stderr
    canceled = logged_in("jobs", "--status", "canceled")
    assert [row.split()[2:4] for row in canceled.stdout.splitlines()[1:]] == [["canceled", "0"]]
    whole = json.loads(logged_in("job", listed.stdout.splitlines()[1].split()[0], "--json").stdout)
    assert whole["started_at"] is None
    assert available() == before - 3  # the busy job only

    bad = logged_in("predict", "test-steps", "text=x", "--cancel-after", "soon")
    assert bad.returncode == 2
    assert "not a duration" in bad.stderr
    for result in (late, queued, bad):
        no_traceback(result)


def test_balance(cli_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    cli = new_cli(tmp_path_factory)
    assert cli.login(cli_server, cli_server.register()).returncode == 0
    result = cli("balance")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "100 credits available (balance 100, 0 held by unfinished jobs)"


def test_clear_errors(cli_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    cli = new_cli(tmp_path_factory)
    email = cli_server.register()

    not_logged_in = cli("balance")
    assert not_logged_in.returncode == 1
    assert "Not logged in: run `mlservice login`" in not_logged_in.stderr

    wrong = cli("login", "--url", cli_server.url, "--email", email, "--password-stdin", stdin="wrong123\n")
    assert wrong.returncode == 1
    assert "Wrong e-mail or password" in wrong.stderr
    assert not cli.config.exists()

    assert cli.login(cli_server, email).returncode == 0
    unknown_key = cli("balance", MLSERVICE_API_KEY="mls_" + "A" * 46)
    assert unknown_key.returncode == 1
    assert "refused the API key" in unknown_key.stderr
    assert "mlservice login" in unknown_key.stderr

    unknown_model = cli("predict", "no-such-model", "text=hi")
    assert unknown_model.returncode == 1
    assert "There is no model 'no-such-model'" in unknown_model.stderr
    assert "`mlservice models`" in unknown_model.stderr

    down = cli("balance", MLSERVICE_URL=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1
    assert "Cannot reach the server at http://127.0.0.1:" in down.stderr

    usage = cli("predict", "test-echo", "no-equals-sign")
    assert usage.returncode == 2
    assert "is not key=value" in usage.stderr
    missing = cli("predict", "image-classification", "image=@/no/such/file.jpg")
    assert missing.returncode == 2
    assert "cannot read /no/such/file.jpg" in missing.stderr

    # No credits left: an administrator takes them all.
    admin = cli_server.bearer(cli_server.create_admin())
    user = httpx.get(f"{cli_server.url}/api/users/me", headers=cli_server.bearer(email)).json()
    r = httpx.post(
        f"{cli_server.url}/api/admin/users/{user['id']}/adjustments",
        json={"amount": -100, "note": "test"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    broke = cli("predict", "test-echo", "text=hi", "--wait")
    assert broke.returncode == 1
    assert "costs 3 credits; 0 available" in broke.stderr
    assert "mlservice balance" in broke.stderr

    for result in (not_logged_in, wrong, unknown_key, unknown_model, down, usage, missing, broke):
        no_traceback(result)


def test_logging_in_again_replaces_the_stored_key(
    cli_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cli = new_cli(tmp_path_factory)
    email = cli_server.register(unique_email())
    assert cli.login(cli_server, email).returncode == 0
    first = cli.stored()["api_key"]
    assert cli.login(cli_server, email, "--name", "second login").returncode == 0
    second = cli.stored()["api_key"]
    assert second != first
    # The replaced key is revoked: nothing is left working that no file holds.
    assert (
        httpx.get(f"{cli_server.url}/api/wallet", headers={"Authorization": f"Bearer {first}"}).status_code
        == 401
    )
    listed = httpx.get(f"{cli_server.url}/api/keys", headers={"Authorization": f"Bearer {second}"}).json()
    assert [k["name"] for k in listed] == ["second login"]
    # The environment overrides the file.
    assert cli("balance", MLSERVICE_API_KEY=first).returncode == 1


def test_server_commands_still_work(cli_server: LiveServer) -> None:
    listed = cli_server.cli("models", "list")
    assert "image-classification" in listed.stdout
    assert "prepared" in listed.stdout
    helped = cli_server.cli("models", "prepare", "--help")
    assert "--force" in helped.stdout
