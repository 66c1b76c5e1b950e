"""The client's parts that need no server: argument parsing, the config file, the progress line,
and how refusals read (httpx's MockTransport stands in for the server)."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlservice.client import config as client_config
from mlservice.client.api import Api
from mlservice.client.config import ClientConfig, load_config, save_config
from mlservice.client.display import Progress, job_state, table
from mlservice.client.errors import ApiError, ClientError
from mlservice.client.inputs import parse_inputs, parse_value


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.25", 0.25),
        ("true", True),
        ("False", False),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": 1}', {"a": 1}),
        ("nan", "nan"),
        ("[not json", "[not json"),
        ("Ada", "Ada"),
        ("", ""),
    ],
)
def test_parameter_values(raw: str, value: Any) -> None:
    assert parse_value(raw) == value


def test_inputs(tmp_path: Path) -> None:
    photo = tmp_path / "cat.jpg"
    photo.write_bytes(b"\xff\xd8jpeg")
    notes = tmp_path / "notes.txt"
    notes.write_text("a space adventure", encoding="utf-8")

    inputs = parse_inputs([f"image=@{photo}", "top_k=3", "label=Ada Lovelace", "x=a=b"])
    assert inputs.file == ("cat.jpg", b"\xff\xd8jpeg")
    assert inputs.params == {"top_k": 3, "label": "Ada Lovelace", "x": "a=b"}
    assert inputs.text is None

    assert parse_inputs(["text=hello"]).text == "hello"
    assert parse_inputs([f"text=@{notes}"]).text == "a space adventure"

    for bad in (["novalue"], ["=3"], [f"a=@{photo}", f"b=@{photo}"], [f"image=@{tmp_path / 'none.jpg'}"]):
        with pytest.raises(ClientError) as refused:
            parse_inputs(bad)
        assert refused.value.exit_code == 2


def test_config_file_is_private_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "deep" / "client.json"
    monkeypatch.setenv("MLSERVICE_CONFIG", str(path))
    monkeypatch.delenv("MLSERVICE_URL", raising=False)
    monkeypatch.delenv("MLSERVICE_API_KEY", raising=False)
    assert load_config() == ClientConfig(client_config.DEFAULT_URL)

    save_config(ClientConfig("http://api.example.com:8000", "mls_stored", "id-1"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_config() == ClientConfig("http://api.example.com:8000", "mls_stored", "id-1")
    # Replaced whole: an old, wider file becomes private too.
    path.chmod(0o644)
    save_config(ClientConfig("http://api.example.com:8000", "mls_new"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]

    monkeypatch.setenv("MLSERVICE_URL", "https://other.example.com/")
    monkeypatch.setenv("MLSERVICE_API_KEY", "mls_env")
    assert load_config() == ClientConfig("https://other.example.com", "mls_env")

    monkeypatch.setenv("MLSERVICE_URL", "other.example.com")
    with pytest.raises(ClientError, match="not a server URL"):
        load_config()
    path.write_text("{broken", encoding="utf-8")
    with pytest.raises(ClientError, match="run `mlservice login` again"):
        load_config()


def test_config_path_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSERVICE_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert client_config.config_path() == tmp_path / "mlservice" / "client.json"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert client_config.config_path() == tmp_path / ".config" / "mlservice" / "client.json"


def api_answering(status: int, body: Any, headers: dict[str, str] | None = None) -> Api:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    return Api("http://testserver", "mls_x", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            401,
            {"error": {"code": "not_authenticated", "message": "Authentication required."}},
            "refused the API key",
        ),
        (
            402,
            {"error": {"code": "insufficient_credits", "message": "This run costs 5 credits; 1 available."}},
            "This run costs 5 credits; 1 available. `mlservice balance` shows your credits.",
        ),
        (
            404,
            {"error": {"code": "model_not_found", "message": "There is no model 'x'."}},
            "There is no model 'x'. `mlservice models` lists the models.",
        ),
        (502, b"<html>Bad Gateway</html>", "The server answered 502 Bad Gateway."),
    ],
)
def test_refusals_read_as_sentences(status: int, body: Any, expected: str) -> None:
    with api_answering(status, body) as api, pytest.raises(ApiError) as refused:
        api.request("GET", "/wallet")
    assert expected in refused.value.message
    assert refused.value.status == status


def test_rate_limits_say_when_to_retry() -> None:
    body = {"error": {"code": "rate_limited", "message": "Too many requests."}}
    with api_answering(429, body, {"Retry-After": "7"}) as api, pytest.raises(ApiError) as refused:
        api.request("POST", "/keys")
    assert refused.value.message == "Too many requests. Retry in 7 s."


def test_table_aligns_columns() -> None:
    text = table(("SLUG", "PRICE"), [("a-long-slug", 5), ("b", 120)], right=("PRICE",))
    assert text.splitlines() == ["SLUG         PRICE", "a-long-slug      5", "b              120"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(out, "j1")
    progress.update("queued")
    progress.update("running")
    progress.update("running")
    progress.close("job j1 succeeded")
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines[:-1]] == ["job j1: queued", "job j1: running"]
    assert lines[-1] == "job j1 succeeded"


def test_progress_redraws_one_line_on_a_terminal() -> None:
    out = FakeTerminal()
    progress = Progress(out, "j1")
    progress.update("running")
    progress.close("job j1 succeeded")
    written = out.getvalue()
    assert "\n" not in written.removesuffix("job j1 succeeded\n")
    assert "\r\x1b[K" in written
    assert "j1  running" in written


def test_job_state_shows_progress_while_running() -> None:
    running = {"status": "running", "progress": {"fraction": 0.4286, "message": "step 3 of 7"}}
    assert job_state(running) == "running  42%  step 3 of 7"
    assert job_state({"status": "running", "progress": {"fraction": 1.0, "message": None}}) == "running  100%"
    assert job_state({"status": "running", "progress": None}) == "running"
    assert job_state({"status": "queued"}) == "queued"
    # Progress left from the run does not decorate a finished job.
    assert job_state({"status": "succeeded", "progress": {"fraction": 1.0, "message": "done"}}) == "succeeded"


def test_progress_lines_follow_progress_changes() -> None:
    out = io.StringIO()
    progress = Progress(out, "j1")
    for fraction in (0.25, 0.25, 0.5):
        progress.update(job_state({"status": "running", "progress": {"fraction": fraction, "message": None}}))
    progress.close()
    assert [line.split(" (")[0] for line in out.getvalue().splitlines()] == [
        "job j1: queued",
        "job j1: running  25%",
        "job j1: running  50%",
    ]


def test_progress_on_a_terminal_rewrites_the_line_in_place() -> None:
    out = FakeTerminal()
    progress = Progress(out, "j1")
    progress.update("running  42%  step 3 of 7")
    progress.close("done")
    assert "\r\x1b[K- job j1  running  42%  step 3 of 7  " in out.getvalue()
