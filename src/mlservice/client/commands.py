"""The client's subcommands: login, models, predict, job, jobs, download, balance."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import mimetypes
import os
import re
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlservice.client.api import Api
from mlservice.client.config import (
    DEFAULT_URL,
    KEY_ENV,
    URL_ENV,
    ClientConfig,
    load_config,
    normalize_url,
    read_stored,
    save_config,
)
from mlservice.client.display import Progress, job_state, local_time, table
from mlservice.client.errors import (
    EXIT_INTERRUPTED,
    EXIT_JOB_FAILED,
    EXIT_USAGE,
    ApiError,
    ClientError,
)
from mlservice.client.inputs import Inputs, parse_inputs

FINISHED = frozenset({"succeeded", "failed", "canceled", "aborted"})
STATUSES = ("queued", "running", "succeeded", "failed", "canceled", "aborted")
# Seconds a long poll asks the server to wait: it answers at once when the job finishes, but not when
# it starts running, so the first polls are short (the status shown moves on soon) and then grow.
FIRST_POLL_WAIT_S = 0.5
POLL_WAIT_S = 5.0
# While it runs the long poll does not answer on progress: shorter polls keep the progress line live.
RUNNING_POLL_WAIT_S = 1.0
# Consecutive failures to reach the server while waiting before giving up (the job goes on).
POLL_RETRIES = 3

Command = Callable[[argparse.Namespace], int]


def run(command: Command, args: argparse.Namespace) -> int:
    """Run a client command: failures become one line on stderr and an exit status."""
    try:
        return command(args)
    except ClientError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _authenticated() -> Api:
    config = load_config()
    if not config.api_key:
        raise ClientError(f"Not logged in: run `mlservice login` (or set {KEY_ENV}).")
    return Api(config.url, config.api_key)


# -- login -------------------------------------------------------------------------------------------


def default_key_name() -> str:
    host = re.sub(r"[\x00-\x1f\x7f]", "", socket.gethostname()).strip() or "unknown host"
    return f"mlservice CLI on {host}"[:100]


def login(args: argparse.Namespace) -> int:
    stored = read_stored()
    url = normalize_url(
        args.url or os.environ.get(URL_ENV, "").strip() or (stored.url if stored else DEFAULT_URL)
    )
    if args.password_stdin and not args.email:
        raise ClientError("--password-stdin needs --email", exit_code=EXIT_USAGE)
    email = args.email or input("E-mail: ").strip()
    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else getpass.getpass("Password: ")
    if not email or not password:
        raise ClientError("an e-mail address and a password are needed", exit_code=EXIT_USAGE)

    with Api(url) as anonymous:
        token = anonymous.json("POST", "/auth/jwt/login", data={"username": email, "password": password})[
            "access_token"
        ]
    with Api(url, token) as api:
        key = api.json("POST", "/keys", json={"name": args.name or default_key_name()})
        path = save_config(ClientConfig(url, key["key"], key["id"]))
        if stored is not None and stored.key_id and stored.url == url and stored.key_id != key["id"]:
            # The key this file held is replaced: revoke it rather than leave it working unseen
            # (best effort: it may be revoked already, or another account's).
            with contextlib.suppress(ClientError):
                api.request("DELETE", f"/keys/{stored.key_id}")
    print(f"Logged in to {url} as {email}; the API key {key['prefix']}... is stored in {path}.")
    if os.environ.get(KEY_ENV, "").strip():
        print(f"note: {KEY_ENV} is set and takes precedence over the stored key.", file=sys.stderr)
    return 0


# -- models, balance, jobs -----------------------------------------------------------------------------


def list_models(args: argparse.Namespace) -> int:
    config = load_config()
    with Api(config.url, config.api_key) as api:
        models = api.json("GET", "/models")
    rows = [(m["slug"], m["title"], m["input_kind"], m["price"]) for m in models]
    print(table(("SLUG", "TITLE", "INPUT", "PRICE"), rows, right=("PRICE",)))
    return 0


def balance(args: argparse.Namespace) -> int:
    with _authenticated() as api:
        wallet = api.json("GET", "/wallet")
    print(
        f"{wallet['available']} credits available "
        f"(balance {wallet['balance']}, {wallet['held']} held by unfinished jobs)"
    )
    return 0


def _seconds(ms: float | None) -> str:
    return "" if ms is None else f"{ms / 1000:.2f} s"


def list_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.status:
        params["status"] = args.status
    if args.model:
        params["model"] = args.model
    with _authenticated() as api:
        page = api.json("GET", "/jobs", params=params)
    items = page["items"]
    if not items:
        print("No jobs yet." if not (args.status or args.model) else "No such jobs.", file=sys.stderr)
        return 0
    rows = [
        (
            j["id"],
            j["model"],
            j["status"],
            _charged(j),
            local_time(j["created_at"]),
            _seconds(j["processing_ms"]),
        )
        for j in items
    ]
    print(table(("ID", "MODEL", "STATUS", "COST", "CREATED", "TIME"), rows, right=("COST", "TIME")))
    print("(COST: what was charged; a job not yet finished has its price held)", file=sys.stderr)
    if page["total"] > len(items):
        print(f"({len(items)} of {page['total']}; --limit N shows more)", file=sys.stderr)
    return 0


def _charged(job: dict[str, Any]) -> str:
    """What a job cost its owner: its price once it succeeded, held until it ends, else nothing."""
    if job["status"] == "succeeded":
        return str(job["cost"])
    if job["status"] not in FINISHED:
        return f"{job['cost']} held"
    return "0"


# -- predict and job ----------------------------------------------------------------------------------


def _submit(api: Api, model: str, inputs: Inputs, *, cancel_after: str | None = None) -> dict[str, Any]:
    data = {"model": model}
    if inputs.text is not None:
        data["text"] = inputs.text
    if inputs.params:
        data["params"] = json.dumps(inputs.params)
    files = None
    if inputs.file is not None:
        name, content = inputs.file
        media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        files = {"file": (name, content, media_type)}
    headers = {"Cancel-After": cancel_after} if cancel_after else None
    job: dict[str, Any] = api.json("POST", "/jobs", data=data, files=files, headers=headers)
    return job


def _wait(api: Api, job: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Long-poll the job until it finishes, riding out short losses of the server."""
    failures = 0
    wait_s = FIRST_POLL_WAIT_S
    while job["status"] not in FINISHED:
        progress.update(job_state(job))
        if job["status"] == "running":
            wait_s = min(wait_s, RUNNING_POLL_WAIT_S)
        try:
            job = api.json("GET", f"/jobs/{job['id']}", params={"wait": wait_s}, timeout=wait_s + 30)
        except ApiError as exc:
            if exc.status < 500 or failures >= POLL_RETRIES:
                raise
            failures += 1
        except ClientError:
            if failures >= POLL_RETRIES:
                raise
            failures += 1
        else:
            failures = 0
            wait_s = min(wait_s * 2, POLL_WAIT_S)
            continue
        progress.update(f"{job['status']} (the server did not answer; retrying)")
        time.sleep(2 ** (failures - 1))
    return job


def _follow(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    progress = Progress(sys.stderr, job["id"], job_state(job))
    try:
        job = _wait(api, job, progress)
    except KeyboardInterrupt:
        progress.close(f"Stopped waiting; the job goes on: `mlservice job {job['id']} --wait`.")
        raise
    except BaseException:
        progress.close()
        raise
    cost = f", cost {job['cost']} credits" if job["status"] == "succeeded" else ""
    progress.close(f"job {job['id']} {job['status']} after {progress.elapsed_s:.1f} s{cost}")
    return job


def show_result(job: dict[str, Any], *, as_json: bool) -> int:
    """The job's output on stdout (the whole job with ``--json``), everything else on stderr."""
    if as_json:
        print(json.dumps(job, indent=2, ensure_ascii=False))
    status = job["status"]
    if status == "succeeded":
        if not as_json:
            print(json.dumps(job["output"], indent=2, ensure_ascii=False))
        for artifact in job.get("artifacts") or []:
            print(
                f"artifact {artifact['name']}: {artifact['filename']}, {artifact['media_type']}, "
                f"{artifact['bytes']} bytes; download: mlservice download {job['id']} {artifact['name']}",
                file=sys.stderr,
            )
        return 0
    if status == "failed":
        error = job.get("error") or {}
        print(
            f"job {job['id']} failed: {error.get('message') or 'no reason given'} ({error.get('code')})",
            file=sys.stderr,
        )
        return EXIT_JOB_FAILED
    if status == "canceled":
        how = "while it ran" if job.get("started_at") else "before it started"
        print(f"job {job['id']} was canceled {how}; nothing was charged", file=sys.stderr)
        return EXIT_JOB_FAILED
    if status == "aborted":
        why = "its deadline (--cancel-after) passed before it started; nothing was charged"
        print(f"job {job['id']} was aborted: {why}", file=sys.stderr)
        return EXIT_JOB_FAILED
    print(f"job {job['id']} is {status}; `mlservice job {job['id']} --wait` waits for it", file=sys.stderr)
    return 0


def predict(args: argparse.Namespace) -> int:
    inputs = parse_inputs(args.inputs)
    with _authenticated() as api:
        job = _submit(api, args.model, inputs, cancel_after=args.cancel_after)
        if not args.wait:
            print(job["id"])
            return 0
        return show_result(_follow(api, job), as_json=args.json)


def _job_id(raw: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise ClientError(f"{raw!r} is not a job id", exit_code=EXIT_USAGE) from None


def show_job(args: argparse.Namespace) -> int:
    with _authenticated() as api:
        job: dict[str, Any] = api.json("GET", f"/jobs/{_job_id(args.job_id)}")
        if args.wait and job["status"] not in FINISHED:
            job = _follow(api, job)
        return show_result(job, as_json=args.json)


def _attachment_name(disposition: str | None) -> str | None:
    match = re.search(r'filename="([^"]+)"', disposition or "")
    return Path(match.group(1)).name if match else None


def download(args: argparse.Namespace) -> int:
    with _authenticated() as api:
        response = api.request("GET", f"/jobs/{_job_id(args.job_id)}/artifacts/{args.name}")
    if args.output == "-":
        sys.stdout.buffer.write(response.content)
        sys.stdout.buffer.flush()
        return 0
    target = Path(args.output or _attachment_name(response.headers.get("content-disposition")) or args.name)
    if target.exists() and not args.force:
        raise ClientError(f"{target} exists; --force overwrites it", exit_code=EXIT_USAGE)
    target.write_bytes(response.content)
    print(f"saved {len(response.content)} bytes to {target}", file=sys.stderr)
    return 0


# -- the parser ----------------------------------------------------------------------------------------


def _limit(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 200:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number from 1 to 200")
    return value


def _duration(raw: str) -> str:
    text = raw.strip().lower()
    if not re.fullmatch(r"\d+(?:\.\d+)?|(?:\d+(?:\.\d+)?(?:ms|s|m|h))+", text):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a duration such as 30s, 5m or 1h30m")
    return text


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The client's subcommands, beside the server's in ``mlservice``'s parser. Each sets
    ``client_handler``: it runs without the server's settings."""
    p = sub.add_parser("login", help="client: log in to a server and store an API key for this user")
    p.add_argument("--url", help=f"the server (default: {URL_ENV}, the stored one, or {DEFAULT_URL})")
    p.add_argument("--email", help="the account's e-mail address (asked when not given)")
    p.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )
    p.add_argument("--name", help="the API key's name (default: after this host)")
    p.set_defaults(client_handler=login)

    p = sub.add_parser(
        "predict",
        help="client: run a model",
        description="Submit a job: text=... is the text, NAME=@path uploads a file (e.g. image=@cat.jpg), "
        "other key=value pairs are the model's parameters (numbers and true/false parsed).",
    )
    p.add_argument("model", help="the model's slug (`mlservice models` lists them)")
    p.add_argument("inputs", nargs="*", metavar="key=value")
    p.add_argument("--wait", action="store_true", help="wait for the result, showing progress on stderr")
    p.add_argument("--json", action="store_true", help="print the whole job as JSON, not only its output")
    p.add_argument(
        "--cancel-after",
        type=_duration,
        metavar="DURATION",
        help="a deadline (e.g. 30s, 5m, 1h30m): not "
        "started by then, the job is aborted; still running, canceled (either way nothing is charged)",
    )
    p.set_defaults(client_handler=predict)

    p = sub.add_parser("job", help="client: show one job and its result")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true", help="wait for it to finish")
    p.add_argument("--json", action="store_true", help="print the whole job as JSON")
    p.set_defaults(client_handler=show_job)

    p = sub.add_parser("jobs", help="client: your recent jobs")
    p.add_argument("--limit", type=_limit, default=20, metavar="N", help="at most N jobs (1 to 200)")
    p.add_argument("--status", choices=STATUSES)
    p.add_argument("--model", help="only this model's jobs")
    p.set_defaults(client_handler=list_jobs)

    p = sub.add_parser("download", help="client: save a file a job produced")
    p.add_argument("job_id")
    p.add_argument("name", help="the artifact's name, as the job lists it")
    p.add_argument("-o", "--output", help="where to save it (default: its file name; -: stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(client_handler=download)

    p = sub.add_parser("balance", help="client: your credits")
    p.set_defaults(client_handler=balance)
