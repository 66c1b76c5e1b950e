"""``python -m deploy.local``: a :class:`LocalDeployment` on this machine until Ctrl-C.

The database, the broker and the model cache come from mlservice's own settings
(``MLSERVICE_DATABASE_URL``, ``MLSERVICE_BROKER_URL``, ``MLSERVICE_MODEL_CACHE_DIR`` or ``.env``),
read the way ``mlservice serve`` reads them; ``make deploy-local`` sets the first two.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from deploy.local.deployment import LocalDeployment
from mlservice.observability.logs import configure_logging
from mlservice.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.local",
        description="nginx, API and worker processes on loopback (MLSERVICE_BROKER_URL), until Ctrl-C",
    )
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models", nargs="*", help="model slugs the workers run (default: all)")
    parser.add_argument("--port", type=int, help="nginx port (default: a free one)")
    parser.add_argument("--var-dir", default="var/deploy-local", help="shared by every process")
    return parser


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    deployment = LocalDeployment(
        settings.resolved_database_url,
        settings.broker_url,
        Path(args.var_dir),
        api_count=args.apis,
        worker_count=args.workers,
        models=args.models,
        model_cache_dir=settings.resolved_model_cache_dir,
        port=args.port,
    )
    return run_until_interrupted(deployment)
