"""The scaled-out layout as real processes on loopback: nginx → N APIs → RabbitMQ → N workers.

:class:`LocalDeployment` runs ``mlservice migrate``, then ``mlservice serve`` processes (API only,
``MLSERVICE_WORKERS=0``), ``mlservice worker`` processes and an nginx in front of the APIs, each a
child process with its log under ``<var_dir>/logs``. They share ``var_dir``: the JWT secret the
first API generates there, the uploads (``files/``) and, unless given, the model cache.

nginx runs in the foreground (``daemon off``) with its prefix, pid file, temp paths and logs in
``<var_dir>/nginx``; its config is rendered from ``deploy/nginx.conf``, the compose deployment's,
so both load balancers are the same but for addresses. The system's nginx (``/etc/nginx``, its
service) is never touched; when no nginx binary is installed, Debian's ``nginx-light`` is.

``make deploy-local`` (or ``mlservice deploy-local``) runs it until Ctrl-C; tests use it as a
context manager.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

# deploy/nginx.conf of the checkout this module runs from (src/mlservice/ -> repository root).
DEFAULT_NGINX_TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
UPSTREAM_NAME = "mlservice_api"
NGINX_PACKAGE = "nginx-light"


class DeploymentError(RuntimeError):
    """A process of the deployment could not be started or did not become ready."""


@dataclass
class ManagedProcess:
    """One child process and the log file its stdout and stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # Where this run's output starts in the (appended) log file.
    log_offset: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """What this run of the process has written so far."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self.log_offset)
                return handle.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def send(self, sig: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int:
        """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; returns the exit status."""
        self.send(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) did not stop within %.0f s: killing it", self.name, self.pid, timeout)
            self.popen.kill()
            return self.popen.wait()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 2.0, limit: int | None = 200) -> tuple[int | None, str]:
    """Status and body (its first ``limit`` bytes) of a GET, or (None, why not); the standard
    library only, as httpx is a development dependency."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        return response.status, response.read(limit).decode("utf-8", "replace")
    except OSError as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def find_nginx() -> str | None:
    # /usr/sbin is not on every user's PATH, and that is where Debian puts nginx.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def ensure_nginx() -> str:
    """The nginx binary, installing Debian's ``nginx-light`` first when there is none."""
    found = find_nginx()
    if found:
        return found
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        raise DeploymentError(
            f"nginx is not installed; install it (e.g. `apt-get install {NGINX_PACKAGE}`) and retry"
        )
    log.info("nginx not found: installing %s", NGINX_PACKAGE)
    # RUNLEVEL=1: the package's postinst must not start the system nginx service (invoke-rc.d
    # starts nothing for runlevel 1); only our own nginx processes are ever run.
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "RUNLEVEL": "1"}
    install = [
        apt_get,
        "-o",
        "DPkg::Lock::Timeout=300",
        "install",
        "-y",
        "--no-install-recommends",
        NGINX_PACKAGE,
    ]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        # Fresh machines may have no package lists yet.
        subprocess.run(  # noqa: S603
            [apt_get, "-o", "DPkg::Lock::Timeout=300", "update"],
            env=env,
            capture_output=True,
            check=False,
        )
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    found = find_nginx()
    if result.returncode != 0 or not found:
        raise DeploymentError(f"installing {NGINX_PACKAGE} failed:\n{result.stdout}\n{result.stderr}")
    return found


def render_nginx_conf(template: str, *, listen: str, upstreams: Sequence[str], prefix: Path) -> str:
    """``template`` (deploy/nginx.conf) with local addresses and temp paths under ``prefix``.

    Replaces the ``server`` lines of ``upstream mlservice_api`` by one per address in ``upstreams``
    (keeping the first line's parameters), the single ``listen`` line by ``listen``, and adds the
    temp paths, which otherwise default to the system nginx's directories.
    """
    block = re.search(rf"(upstream\s+{UPSTREAM_NAME}\s*\{{)(.*?)(\n\s*\}})", template, re.DOTALL)
    if block is None:
        raise DeploymentError(f"the nginx template has no `upstream {UPSTREAM_NAME}` block")
    server_line = re.compile(r"^(?P<indent>[ \t]*)server[ \t]+\S+(?P<params>[^;\n]*);[ \t]*\n", re.MULTILINE)
    servers = list(server_line.finditer(block.group(2)))
    if not servers:
        raise DeploymentError(f"`upstream {UPSTREAM_NAME}` in the nginx template has no server lines")
    indent, params = servers[0].group("indent"), servers[0].group("params")
    local_servers = "".join(f"{indent}server {address}{params};\n" for address in upstreams)
    # The local servers take the place of the first template server; the other ones go.
    body = block.group(2)
    body = body[: servers[0].start()] + local_servers + server_line.sub("", body[servers[0].start() :])
    rendered = template[: block.start(2)] + body + template[block.end(2) :]

    listens = re.findall(r"^[ \t]*listen[ \t]+[^;\n]+;", rendered, re.MULTILINE)
    if len(listens) != 1:
        raise DeploymentError(f"the nginx template must have exactly one listen line, not {len(listens)}")
    rendered = re.sub(
        r"^([ \t]*)listen[ \t]+[^;\n]+;", rf"\g<1>listen {listen};", rendered, count=1, flags=re.MULTILINE
    )

    http = re.search(r"^([ \t]*)http\s*\{[ \t]*\n", rendered, re.MULTILINE)
    if http is None:
        raise DeploymentError("the nginx template has no http block")
    temp = prefix / "temp"
    temp_paths = "".join(
        f'    {directive}_temp_path "{temp / name}";\n'
        for directive, name in (
            ("client_body", "client_body"),
            ("proxy", "proxy"),
            ("fastcgi", "fastcgi"),
            ("uwsgi", "uwsgi"),
            ("scgi", "scgi"),
        )
    )
    local_note = "    # Added by mlservice.deploy_local: temp files stay under its own prefix.\n"
    return rendered[: http.end()] + local_note + temp_paths + "\n" + rendered[http.end() :]


class LocalDeployment:
    """nginx, ``api_count`` API processes and ``worker_count`` workers sharing one database,
    one RabbitMQ vhost and ``var_dir``.

    ``models`` limits the workers to those model slugs (the APIs serve the whole catalog);
    ``extra_env`` is added to every mlservice process's environment (e.g.
    ``MLSERVICE_INFERENCE_THREADS``). Use as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(
        self,
        database_url: str,
        broker_url: str,
        var_dir: Path,
        api_count: int = 2,
        worker_count: int = 2,
        models: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        *,
        model_cache_dir: Path | None = None,
        nginx_template: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        ready_timeout: float = 120.0,
        stop_timeout: float = 45.0,
    ) -> None:
        if api_count < 1 or worker_count < 0:
            raise ValueError("a deployment needs at least one API process and no negative worker count")
        if not broker_url:
            raise ValueError("a deployment of separate workers needs a broker URL (amqp://...)")
        self.database_url = database_url
        self.broker_url = broker_url
        self.var_dir = var_dir.resolve()
        self.api_count = api_count
        self.worker_count = worker_count
        self.models = list(models) if models else None
        self.extra_env = dict(extra_env or {})
        self.model_cache_dir = model_cache_dir.resolve() if model_cache_dir else None
        self.nginx_template = nginx_template or DEFAULT_NGINX_TEMPLATE
        self.host = host
        self.port = port
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout

        self.logs_dir = self.var_dir / "logs"
        self.nginx_dir = self.var_dir / "nginx"
        self.api_ports: list[int] = []
        self.api_procs: list[ManagedProcess] = []
        self.worker_procs: list[ManagedProcess | None] = [None] * worker_count
        # Each worker answers /health and /ready here; kept across restarts of that worker.
        self.worker_health_ports: list[int] = [free_port() for _ in range(worker_count)]
        self.nginx_proc: ManagedProcess | None = None

    # -- addresses --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The load balancer's base URL (nginx)."""
        if self.port is None:
            raise DeploymentError("the deployment is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def api_urls(self) -> list[str]:
        """Each API process's own base URL, bypassing nginx."""
        return [f"http://127.0.0.1:{port}" for port in self.api_ports]

    @property
    def worker_health_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.worker_health_ports]

    @property
    def nginx_access_log(self) -> Path:
        """One line per request, with ``upstream=<address of the API that answered>``."""
        return self.logs_dir / "nginx-access.log"

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Migrate, start everything, and return once nginx answers /ready and workers consume."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        nginx = ensure_nginx()
        try:
            self.migrate()
            for i in range(self.api_count):
                self.api_ports.append(free_port())
                self.api_procs.append(self._start_api(i, self.api_ports[-1]))
            for i in range(self.worker_count):
                self.start_worker(i, wait=False)
            self._wait_apis_ready()
            self.port = self.port or free_port(self.host)
            self.nginx_proc = self._start_nginx(nginx)
            self._wait_http(f"{self.url}/ready", [self.nginx_proc], "nginx")
            for i in range(self.worker_count):
                self.wait_worker_ready(i)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM to every process at once (workers finish their running batches), wait up to
        ``stop_timeout`` in all, then SIGKILL what is left."""
        procs = [p for p in [self.nginx_proc, *self.api_procs, *self.worker_procs] if p is not None]
        for proc in procs:
            proc.send(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in procs:
            proc.stop(max(deadline - time.monotonic(), 0.1))
        self.nginx_proc = None
        self.api_procs = []
        self.api_ports = []
        self.worker_procs = [None] * self.worker_count

    # -- workers ------------------------------------------------------------------------------------

    def start_worker(self, i: int, *, wait: bool = True) -> ManagedProcess:
        """(Re)start worker ``i`` (on the same health port); with ``wait``, return once it is
        consuming and answers /ready."""
        current = self.worker_procs[i]
        if current is not None and current.running:
            raise DeploymentError(f"worker {i} is still running (pid {current.pid})")
        command = ["worker"]
        if self.models:
            command += ["--models", *self.models]
        env = self._settings_env() | {
            "MLSERVICE_HOST": "127.0.0.1",
            "MLSERVICE_WORKER_HEALTH_PORT": str(self.worker_health_ports[i]),
        }
        proc = self._spawn(f"worker-{i}", command, env)
        self.worker_procs[i] = proc
        if wait:
            self.wait_worker_ready(i)
        return proc

    def kill_worker(self, i: int, sig: int = signal.SIGKILL, timeout: float | None = None) -> int:
        """Send ``sig`` to worker ``i`` and wait for it to exit; returns its exit status.

        SIGKILL is a crash; SIGTERM is a graceful stop (running batches finish first). After
        ``timeout`` (default ``stop_timeout``) the worker is SIGKILLed.
        """
        proc = self.worker_procs[i]
        if proc is None:
            raise DeploymentError(f"worker {i} was never started")
        return proc.stop(self.stop_timeout if timeout is None else timeout, sig)

    def wait_worker_ready(self, i: int) -> None:
        """Until worker ``i`` answers /ready on its health port: it consumes, and its database
        and broker connections are up."""
        proc = self.worker_procs[i]
        if proc is None:
            raise DeploymentError(f"worker {i} was never started")
        self._wait_http(f"{self.worker_health_urls[i]}/ready", [proc], proc.name)

    def worker_readiness(self, i: int) -> dict[str, Any]:
        """Worker ``i``'s /ready body: checks, ``models`` (loaded or not), ``running_jobs``."""
        status, body = http_get(f"{self.worker_health_urls[i]}/ready", limit=None)
        if status is None:
            raise DeploymentError(f"worker {i} does not answer: {body}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    # -- internals ----------------------------------------------------------------------------------

    def _settings_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "MLSERVICE_DATABASE_URL": self.database_url,
                "MLSERVICE_BROKER_URL": self.broker_url,
                "MLSERVICE_VAR_DIR": str(self.var_dir),
                "MLSERVICE_STORAGE_DIR": str(self.var_dir / "files"),
                "MLSERVICE_MODEL_CACHE_DIR": str(self.model_cache_dir or self.var_dir / "models"),
                "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, args: Sequence[str], env: Mapping[str, str]) -> ManagedProcess:
        return self._popen(name, [sys.executable, "-m", "mlservice", *args], env)

    def _popen(self, name: str, command: Sequence[str], env: Mapping[str, str]) -> ManagedProcess:
        log_path = self.logs_dir / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as handle:
            popen = subprocess.Popen(  # noqa: S603
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=dict(env),
                # Not in our process group: a Ctrl-C reaches the launcher only, which then stops
                # the children in order (nginx, APIs, workers finishing their batches).
                start_new_session=True,
                # Settings read .env from the working directory: the environment alone decides.
                cwd=self.var_dir,
            )
        log.debug("started %s (pid %d): %s", name, popen.pid, " ".join(command))
        return ManagedProcess(name, popen, log_path, offset)

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "mlservice", "migrate"],
            env=self._settings_env(),
            cwd=self.var_dir,
            capture_output=True,
            text=True,
            check=False,
            timeout=self.ready_timeout,
        )
        if result.returncode != 0:
            raise DeploymentError(f"mlservice migrate failed:\n{result.stdout}\n{result.stderr}")

    def _start_api(self, i: int, port: int) -> ManagedProcess:
        env = self._settings_env() | {"MLSERVICE_WORKERS": "0"}
        return self._spawn(f"api-{i}", ["serve", "--host", "127.0.0.1", "--port", str(port)], env)

    def _wait_apis_ready(self) -> None:
        for url, proc in zip(self.api_urls, self.api_procs, strict=True):
            self._wait_http(f"{url}/ready", [proc], proc.name)

    def _start_nginx(self, nginx: str) -> ManagedProcess:
        self.nginx_dir.mkdir(exist_ok=True)
        (self.nginx_dir / "temp").mkdir(exist_ok=True)
        config = render_nginx_conf(
            self.nginx_template.read_text(encoding="utf-8"),
            listen=f"{self.host}:{self.port}",
            upstreams=[f"127.0.0.1:{port}" for port in self.api_ports],
            prefix=self.nginx_dir,
        )
        config_path = self.nginx_dir / "nginx.conf"
        config_path.write_text(config, encoding="utf-8")
        globals_ = f'daemon off; pid "{self.nginx_dir / "nginx.pid"}";'
        if os.geteuid() == 0:
            # Workers would otherwise run as nobody, who may not reach the temp paths in var_dir.
            globals_ += f" user {pwd.getpwuid(0).pw_name};"
        # The access log goes to stdout, the error log to stderr (as in the container); -e is where
        # nginx writes errors before it has read its config.
        command = [
            nginx,
            "-p",
            str(self.nginx_dir),
            "-c",
            str(config_path),
            "-e",
            str(self.logs_dir / "nginx-error.log"),
            "-g",
            globals_,
        ]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, check=False)  # noqa: S603
        if check.returncode != 0:
            raise DeploymentError(f"nginx rejects {config_path}:\n{check.stderr}")
        error_log = self.logs_dir / "nginx-error.log"
        offset = error_log.stat().st_size if error_log.exists() else 0
        with self.nginx_access_log.open("ab") as out, error_log.open("ab") as err:
            popen = subprocess.Popen(  # noqa: S603
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                cwd=self.nginx_dir,
            )
        return ManagedProcess("nginx", popen, error_log, offset)

    def _wait_http(self, url: str, procs: Sequence[ManagedProcess], what: str) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer"
        while True:
            for proc in procs:
                if not proc.running:
                    raise DeploymentError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            status, last = http_get(url)
            if status == 200:
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
                raise DeploymentError(
                    f"{what} not ready at {url} after {self.ready_timeout} s ({last})\n{tails}"
                )
            time.sleep(0.1)


def run_until_interrupted(deployment: LocalDeployment) -> int:
    """Start ``deployment``, print where it is, and keep it up until Ctrl-C or SIGTERM."""
    stop_requested = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous_term = signal.signal(signal.SIGTERM, request_stop)
    previous_int = signal.getsignal(signal.SIGINT)
    status = 0
    try:
        deployment.start()
        print(f"mlservice is up at {deployment.url}  (API docs: {deployment.url}/docs)")
        for proc, url in zip(deployment.api_procs, deployment.api_urls, strict=True):
            print(f"  {proc.name}: pid {proc.pid}, {url}")
        for worker in deployment.worker_procs:
            if worker is not None:
                print(f"  {worker.name}: pid {worker.pid}")
        print(f"logs: {deployment.logs_dir}   Ctrl-C stops everything", flush=True)
        while not stop_requested and status == 0:
            for child in [deployment.nginx_proc, *deployment.api_procs, *deployment.worker_procs]:
                if child is not None and not child.running:
                    print(f"{child.name} exited with {child.popen.returncode}; stopping", file=sys.stderr)
                    print(child.tail(), file=sys.stderr)
                    status = 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave children behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping ...", flush=True)
        deployment.stop()
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return status
