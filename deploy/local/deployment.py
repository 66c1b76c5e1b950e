""":class:`LocalDeployment`: ``mlservice migrate``, N ``mlservice serve``, N ``mlservice worker``
and an nginx in front of the APIs, as child processes sharing one database, one RabbitMQ vhost
and one ``var_dir``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from deploy.local.nginx import DEFAULT_NGINX_TEMPLATE, require_nginx, start_nginx
from deploy.local.processes import DeploymentError, ManagedProcess, free_port, http_get, spawn, wait_http


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
        nginx = require_nginx()
        try:
            self.migrate()
            for i in range(self.api_count):
                self.api_ports.append(free_port())
                self.api_procs.append(self._start_api(i, self.api_ports[-1]))
            for i in range(self.worker_count):
                self.start_worker(i, wait=False)
            for url, proc in zip(self.api_urls, self.api_procs, strict=True):
                wait_http(f"{url}/ready", [proc], proc.name, self.ready_timeout)
            self.port = self.port or free_port(self.host)
            self.nginx_proc = start_nginx(
                nginx,
                self.nginx_template,
                listen=f"{self.host}:{self.port}",
                upstreams=[f"127.0.0.1:{port}" for port in self.api_ports],
                nginx_dir=self.nginx_dir,
                logs_dir=self.logs_dir,
                access_log=self.nginx_access_log,
            )
            wait_http(f"{self.url}/ready", [self.nginx_proc], "nginx", self.ready_timeout)
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
        wait_http(f"{self.worker_health_urls[i]}/ready", [proc], proc.name, self.ready_timeout)

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
        # The interpreter running the launcher: the venv's, with mlservice installed in it.
        return spawn(name, [sys.executable, "-m", "mlservice", *args], env, self.logs_dir, self.var_dir)

    def _start_api(self, i: int, port: int) -> ManagedProcess:
        env = self._settings_env() | {"MLSERVICE_WORKERS": "0"}
        return self._spawn(f"api-{i}", ["serve", "--host", "127.0.0.1", "--port", str(port)], env)
