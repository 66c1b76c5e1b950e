"""``mlservice``: one subcommand per process and per maintenance task, and the client's commands
(login, models, predict, job, jobs, download, balance) that talk to a server over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys

from mlservice.client import commands as client_commands
from mlservice.observability.logs import configure_logging
from mlservice.settings import Settings


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from mlservice.app import create_app

    uvicorn.run(
        create_app(settings),
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_level=settings.log_level,
        # Logging is configured already (cli.main); the API writes its own `http.request` events.
        log_config=None,
        access_log=False,
        # The app believes X-Forwarded-* itself, from MLSERVICE_FORWARDED_ALLOW_IPS only.
        proxy_headers=False,
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from mlservice.worker import run_worker

    if args.health_port is not None:
        settings = settings.model_copy(update={"worker_health_port": args.health_port})
    try:
        # The worker's event loop carries every claim, commit and ack: uvloop's is the cheaper one
        # (uvicorn uses it for the API too when it is installed).
        import uvloop
    except ImportError:
        asyncio.run(run_worker(settings, args.models))
    else:
        uvloop.run(run_worker(settings, args.models))
    return 0


def _bot(settings: Settings, args: argparse.Namespace) -> int:
    from mlservice.bot.runner import run_bot

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_bot(settings))
    return 0


def _migrate(settings: Settings, args: argparse.Namespace) -> int:
    from mlservice.migrations import runner

    settings.var_dir.mkdir(parents=True, exist_ok=True)
    if args.downgrade:
        runner.downgrade(settings.resolved_database_url, args.downgrade)
    else:
        runner.upgrade(settings.resolved_database_url, args.revision)
    return 0


async def _create_admin(settings: Settings, email: str, password: str) -> str:
    from mlservice.db import Database
    from mlservice.errors import AppError
    from mlservice.users.usecases import create_admin

    db = Database(settings.resolved_database_url)
    try:
        user, created = await create_admin(db, settings, email, password)
    except AppError as exc:
        raise SystemExit(f"error: {exc.message}") from None
    finally:
        await db.dispose()
    return f"created administrator {user.email}" if created else f"{user.email} is now an administrator"


def _create_admin_cmd(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password or os.environ.get("MLSERVICE_ADMIN_PASSWORD")
    if not password:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Repeat password: "):
            print("error: the passwords differ", file=sys.stderr)
            return 2
    print(asyncio.run(_create_admin(settings, args.email, password)))
    return 0


def _models(settings: Settings, args: argparse.Namespace) -> int:
    from mlservice.predictors.checksums import ModelFileError
    from mlservice.predictors.registry import discover_predictors

    predictors = discover_predictors()
    cache = settings.resolved_model_cache_dir
    if args.models_command == "list":
        for slug, cls in sorted(predictors.items()):
            state = "prepared" if cls(cache).is_prepared() else "not prepared"
            print(f"{slug:28} {cls.task:24} {cls.default_price:>6} credits  {state}")
        return 0
    wanted = args.slugs or sorted(predictors)
    unknown = [s for s in wanted if s not in predictors]
    if unknown:
        print(f"error: unknown model(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    cache.mkdir(parents=True, exist_ok=True)
    failed = []
    for slug in wanted:
        predictor = predictors[slug](cache)
        if predictor.is_prepared() and not args.force:
            print(f"{slug}: already prepared")
            continue
        print(f"{slug}: preparing into {cache} ...", flush=True)
        try:
            predictor.prepare()
        except ModelFileError as exc:
            # An install fault, said in one line; the other models are still prepared.
            print(f"error: {slug}: {exc}", file=sys.stderr)
            failed.append(slug)
            continue
        print(f"{slug}: done")
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlservice", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API (with in-process workers on the embedded default)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(handler=_serve)

    worker = sub.add_parser("worker", help="consume jobs from RabbitMQ (MLSERVICE_BROKER_URL)")
    worker.add_argument("--models", nargs="*", help="only these model slugs (default: all)")
    worker.add_argument(
        "--health-port",
        type=int,
        help="answer GET /health and /ready on this port (MLSERVICE_WORKER_HEALTH_PORT)",
    )
    worker.set_defaults(handler=_worker)

    bot = sub.add_parser(
        "bot", help="run the Telegram bot (MLSERVICE_TELEGRAM_TOKEN), with in-process workers on the default"
    )
    bot.set_defaults(handler=_bot)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.add_argument("--downgrade", metavar="REVISION", help="downgrade to REVISION (e.g. base)")
    migrate.set_defaults(handler=_migrate)

    admin = sub.add_parser("create-admin", help="create an administrator, or promote an existing user")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", help="prefer MLSERVICE_ADMIN_PASSWORD or the prompt")
    admin.set_defaults(handler=_create_admin_cmd)

    models = sub.add_parser(
        "models", help="client: the server's catalog; `models prepare|list`: this machine's model files"
    )
    models_sub = models.add_subparsers(dest="models_command")
    prepare = models_sub.add_parser("prepare", help="build model files into the model cache")
    prepare.add_argument("slugs", nargs="*")
    prepare.add_argument("--force", action="store_true")
    prepare.set_defaults(client_handler=None)
    models_sub.add_parser("list", help="list installed predictors").set_defaults(client_handler=None)
    # Bare `mlservice models` is the client's catalog listing; the subcommands stay the server's.
    models.set_defaults(handler=_models, client_handler=client_commands.list_models)

    client_commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Before numpy loads: OpenBLAS threads left spinning after a small matrix product steal the
    # cores onnxruntime is about to use (measured: a MiniLM batch of 4 went from 15.9 to 8.8 ms).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    client_handler = getattr(args, "client_handler", None)
    if client_handler is not None:
        # The client reads no server settings (a server's .env must not break it), logs nothing.
        sys.exit(client_commands.run(client_handler, args))
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(args.handler(settings, args))
