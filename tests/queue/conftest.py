"""Fixtures for the RabbitMQ tests: a vhost of their own per test, and the environment of worker
processes that share the test's database, broker and storage."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BROKER, scratch_vhost


@pytest.fixture
def broker_url() -> Iterator[str]:
    with scratch_vhost("mlservice_test") as vhost:
        yield f"amqp://{BROKER}/{vhost}"


@pytest.fixture
def worker_env(broker_url: str, database_url: str, model_cache: Path, tmp_path: Path) -> dict[str, str]:
    """The environment of a `mlservice worker` sharing the test's database, broker and storage."""
    return os.environ | {
        "MLSERVICE_DATABASE_URL": database_url,
        "MLSERVICE_BROKER_URL": broker_url,
        "MLSERVICE_VAR_DIR": str(tmp_path / "var"),
        "MLSERVICE_STORAGE_DIR": str(tmp_path / "var" / "files"),
        "MLSERVICE_MODEL_CACHE_DIR": str(model_cache),
        "MLSERVICE_JWT_SECRET": "test-secret-" + "x" * 40,
        "MLSERVICE_LOG_LEVEL": "warning",
    }
