"""Fixtures: a real database per backend (SQLite file and a fresh PostgreSQL database), built by
the migrations, emptied before each test; the app with its lifespan; users and tokens."""

from __future__ import annotations

import asyncio
import fnmatch
import io
import os
import secrets
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from mlservice.app import create_app
from mlservice.db import Database
from mlservice.migrations.runner import upgrade
from mlservice.predictors.base import Predictor
from mlservice.predictors.image_classifier import ImageClassifier
from mlservice.predictors.malware import MalwareDetection
from mlservice.predictors.movie_recommendation import MovieRecommendation
from mlservice.settings import Settings
from mlservice.tables import metadata
from mlservice.users.usecases import create_admin
from tests.fixtures.predictors import EchoText

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = [
    b.strip() for b in os.environ.get("MLSERVICE_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()
]
PG_SERVER = os.environ.get("MLSERVICE_TEST_PG", "postgres@127.0.0.1:5432")
BROKER = os.environ.get("MLSERVICE_TEST_AMQP", "guest:guest@127.0.0.1:5672")
PASSWORD = "correct horse 42"

# -- markers (registered in pyproject.toml, described in README.md under "The two commands") ------
# By where a test lives: every test of these files gets the marker.
MARKERS_BY_PATH: dict[str, tuple[str, ...]] = {
    "browser": ("tests/web/test_browser*.py",),
    "deploy": ("tests/deploy/*",),
    # Generated inputs: schemathesis over the OpenAPI schema, a hypothesis state machine. (The
    # authorization matrix and the privilege-escalation sweep beside them are exhaustive, not fuzzed.)
    "fuzz": (
        "tests/security_suites/test_openapi_contract.py",
        "tests/security_suites/test_wallet_state_machine.py",
    ),
}
# `slow`: over ~10 s each (measured with --durations on SQLite, setup included). By node id without
# parameters (a listed test is slow with every parameter)...
SLOW: tuple[str, ...] = (
    "tests/test_e2e.py::test_user_flow",  # a live server of its own: 25 s
    "tests/security_suites/test_openapi_contract.py::test_openapi_contract",  # 75 s
    "tests/security_suites/test_wallet_state_machine.py::test_wallet_state_machine",  # 30 s
    "tests/security_suites/test_privilege_escalation.py::test_no_field_grants_privileges",  # 25 s
    "tests/security_suites/test_authorization.py::test_authorization_matrix",  # 15 s
    # A PostgreSQL of its own stopped and started under load, then every job waited for: 12 s
    "tests/ops/test_database_outage.py::test_database_outage_under_load",
)
# ...and every test that uses a fixture taking that long to set up: a live `mlservice serve` (about
# 25 s; shared, but whichever test comes first pays for it), the movie recommender's model (35 s).
SLOW_FIXTURES = frozenset(
    {"live_server", "live_server_pg", "live_server_any", "cli_server", "replicate_server", "recommender"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    modules: dict[str, Any] = {}
    for item in items:
        try:
            path = item.path.resolve().relative_to(ROOT).as_posix()
        except ValueError:
            continue  # a test from outside the repository
        for marker, patterns in MARKERS_BY_PATH.items():
            if any(fnmatch.fnmatch(path, pattern) for pattern in patterns):
                item.add_marker(marker)
        if item.nodeid.split("[", 1)[0] in SLOW or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("slow")
        if isinstance(item, pytest.Function):
            modules[path] = item.module
    # A renamed or removed slow test would lose its marker without a word: say so when its module
    # is collected.
    for test_id in SLOW:
        path, *names = test_id.split("::")
        found: Any = modules.get(path)
        for name in names:
            found = getattr(found, name, None)
        if path in modules and found is None:
            warnings.warn(
                f"tests/conftest.py: SLOW names a test that does not exist: {test_id}", stacklevel=1
            )


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """Model files built once per checkout and kept between local runs."""
    cache = Path(os.environ.get("MLSERVICE_TEST_MODEL_CACHE", ROOT / "var" / "test-models"))
    cache.mkdir(parents=True, exist_ok=True)
    # Models whose files are built once (ONNX exports, the embedded film catalog); the others
    # read their files straight from their packages.
    for predictor in (ImageClassifier(cache), MovieRecommendation(cache), MalwareDetection(cache)):
        if not predictor.is_prepared():
            predictor.prepare()
    return cache


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
        await asyncio.to_thread(upgrade, url)
        yield url
        return
    async with scratch_pg_database("mlservice_test") as name:
        url = f"postgresql+asyncpg://{PG_SERVER}/{name}"
        await asyncio.to_thread(upgrade, url)
        yield url


@asynccontextmanager
async def scratch_pg_database(prefix: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database of this run's own, dropped afterwards; yields its name."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(f"postgresql://{PG_SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield name
    finally:
        admin = await asyncpg.connect(f"postgresql://{PG_SERVER}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextmanager
def scratch_vhost(prefix: str) -> Iterator[str]:
    """A RabbitMQ vhost of this run's own (guest may use it), deleted afterwards; yields its name."""
    vhost = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


async def empty_database(url: str) -> None:
    db = Database(url)
    try:
        async with db.engine.begin() as conn:
            if db.is_sqlite:
                for table in reversed(metadata.sorted_tables):
                    await conn.execute(table.delete())
            else:
                names = ", ".join(t.name for t in metadata.sorted_tables)
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await db.dispose()


@pytest.fixture
def settings_factory(database_url: str, tmp_path: Path, model_cache: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "var_dir": tmp_path / "var",
            "database_url": database_url,
            "model_cache_dir": model_cache,
            "jwt_secret": "test-secret-" + "x" * 40,
            "workers": 1,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return make


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings

    @property
    def db(self) -> Database:
        return self.app.state.components.db  # type: ignore[no-any-return]

    async def user(self, email: str | None = None, password: str = PASSWORD) -> dict[str, str]:
        """Register and log in; returns the bearer headers."""
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        r = await self.client.post("/api/auth/register", json={"email": email, "password": password})
        assert r.status_code == 201, r.text
        return await self.login(email, password)

    async def login(self, email: str, password: str = PASSWORD) -> dict[str, str]:
        r = await self.client.post("/api/auth/jwt/login", data={"username": email, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    async def admin(self) -> dict[str, str]:
        email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
        await create_admin(self.db, self.settings, email, PASSWORD)
        return await self.login(email)


@pytest.fixture
async def service_factory(database_url: str, settings_factory: Callable[..., Settings]) -> Callable[..., Any]:
    await empty_database(database_url)

    @asynccontextmanager
    async def start(
        predictors: list[type[Predictor]] | None = None, **overrides: Any
    ) -> AsyncIterator[Service]:
        settings = settings_factory(**overrides)
        chosen = predictors or [ImageClassifier, EchoText]
        app = create_app(settings, predictors={cls.slug: cls for cls in chosen})
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                yield Service(app, client, settings)

    return start


@pytest.fixture
async def service(service_factory: Callable[..., Any]) -> AsyncIterator[Service]:
    async with service_factory() as svc:
        yield svc


def jpeg_bytes(image: Any, quality: int = 90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def chelsea_jpeg() -> bytes:
    from skimage import data

    return jpeg_bytes(data.chelsea())


async def wait_for_job(
    client: httpx.AsyncClient, headers: dict[str, str], job_id: str, within: float = 60
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        r = await client.get(f"/api/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] in {"succeeded", "failed", "canceled"}:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {within}s")
        await asyncio.sleep(0.05)
