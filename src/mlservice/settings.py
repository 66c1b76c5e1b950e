"""Settings, read once at startup from the environment (prefix ``MLSERVICE_``) and ``.env``."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MLSERVICE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Where the embedded default keeps everything: the SQLite file, uploads, the model cache.
    var_dir: Path = Path("var")
    database_url: str = ""  # empty: sqlite+aiosqlite:///<var_dir>/mlservice.db
    database_echo: bool = False
    storage_dir: Path | None = None  # empty: <var_dir>/files
    # Where job inputs and artifacts go: files under storage_dir (one host, or a shared volume), or
    # rows in the database (PostgreSQL only) so API processes and workers can be on any machine.
    storage_backend: Literal["local", "database"] = "local"
    model_cache_dir: Path | None = None  # empty: <var_dir>/models

    # Empty: the in-process queue of the embedded default. amqp://user:pass@host:5672/vhost for RabbitMQ.
    broker_url: str = ""
    broker_delivery_limit: int = Field(default=5, ge=1)

    host: str = "127.0.0.1"
    port: int = 8000
    # `mlservice worker` answers GET /health and /ready on this port (0: no health endpoint).
    worker_health_port: int = Field(default=0, ge=0, le=65535)

    # Never a hard-coded default: generated once and kept in <var_dir>/jwt-secret when unset.
    jwt_secret: SecretStr | None = None
    jwt_lifetime_seconds: int = 3600 * 24
    cookie_secure: bool = False

    signup_bonus: int = Field(default=100, ge=0)
    max_refill_amount: int = Field(default=100_000, gt=0)

    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)

    # Consumers per model in this process (0: an API process that runs no jobs). With two, one
    # batch's claim and commit overlap the other's model run; model runs themselves never overlap.
    workers: int = Field(default=2, ge=0)
    # onnxruntime threads per model run (0: one per physical core). Several workers on one machine
    # should split the cores between them, e.g. 1 each for 2 workers on 2 cores.
    inference_threads: int = Field(default=0, ge=0)
    # Let onnxruntime's threads spin between runs (only worth it on cores nothing else uses).
    inference_spinning: bool = False
    preload_models: bool = False
    # Where the movie recommender searches its embeddings: "auto" uses pgvector when the PostgreSQL
    # server has the extension, otherwise exact search in memory ("numpy"); "pgvector" requires it.
    vector_index: Literal["auto", "numpy", "pgvector"] = "auto"
    vector_index_url: str = ""  # libpq URL; empty: database_url when it is PostgreSQL
    # Dynamic batching: a worker gathers up to a model's max_batch_size jobs within its max_wait_ms
    # and runs them as one predict_batch. Off: one job per model run.
    batching: bool = True
    job_max_attempts: int = Field(default=3, ge=1)
    # A running job's lease: its worker renews it every third of this while it works; a worker that
    # dies stops renewing, and the sweeper hands the job to another worker once the lease is over.
    job_lease_seconds: int = Field(default=60, ge=3)
    # How often workers sweep expired leases and republish queued jobs the broker never confirmed.
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # A queued job unconfirmed for this long is republished (its submitter's publish failed or died).
    relay_after_seconds: float = Field(default=10.0, gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("jwt_secret", "storage_dir", "model_cache_dir", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `MLSERVICE_JWT_SECRET=` in a .env file means "not set", never "an empty key".
        return None if isinstance(value, str) and not value.strip() else value

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'mlservice.db').resolve()}"

    @property
    def resolved_vector_index_url(self) -> str:
        """The PostgreSQL for the pgvector index, as a libpq URL; empty when there is none."""
        if self.vector_index_url:
            return self.vector_index_url
        scheme, separator, rest = self.resolved_database_url.partition("://")
        # postgresql+asyncpg://... is SQLAlchemy's; libpq takes the same URL without the driver.
        if separator and scheme.split("+", 1)[0] in ("postgresql", "postgres"):
            return f"postgresql://{rest}"
        return ""

    @property
    def resolved_storage_dir(self) -> Path:
        return self.storage_dir or self.var_dir / "files"

    @property
    def resolved_model_cache_dir(self) -> Path:
        return self.model_cache_dir or self.var_dir / "models"

    def jwt_secret_value(self) -> str:
        """The configured secret, or one generated on first use and kept under ``var_dir``."""
        if self.jwt_secret is not None:
            configured = self.jwt_secret.get_secret_value()
            if len(configured) < 32:
                raise RuntimeError("MLSERVICE_JWT_SECRET must be at least 32 characters (random)")
            return configured
        path = self.var_dir / "jwt-secret"
        if not path.exists():
            self.var_dir.mkdir(parents=True, exist_ok=True)
            # Written aside, then linked into place: two processes starting together end up
            # reading the same complete secret, whoever wins.
            tmp = path.with_name(f".jwt-secret.{secrets.token_hex(8)}")
            tmp.write_text(secrets.token_urlsafe(48), encoding="ascii")
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        secret = path.read_text(encoding="ascii").strip()
        if len(secret) < 32:
            raise RuntimeError(f"{path} holds a JWT secret shorter than 32 characters")
        return secret
