"""Settings, read once at startup from the environment (prefix ``MLSERVICE_``) and ``.env``."""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from ipaddress import ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlservice.security.rates import Rate, parse_rate


class OidcProvider(BaseModel):
    """One OpenID provider the web UI offers a "Log in with ..." button for."""

    # In our URLs (/auth/oidc/<name>/...) and in the link table: never rename a provider in use.
    name: str = Field(default="sso", pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    issuer: str  # https://keycloak.example.com/realms/acme: its /.well-known/openid-configuration
    client_id: str
    client_secret: SecretStr | None = None  # None: a public client (PKCE alone)
    scopes: list[str] = ["openid", "email", "profile"]
    display_name: str = ""  # on the button; empty: the name
    # A claim (e.g. "groups", "roles") that makes the user an administrator when it holds
    # admin_value (or is true, with admin_value empty), checked at every login. Empty: the
    # provider says nothing about roles, and an admin stays an admin.
    admin_claim: str = ""
    admin_value: str = ""

    @property
    def label(self) -> str:
        return self.display_name or self.name


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
    # `mlservice serve` speaks HTTPS itself with this certificate (PEM) and key, when no proxy in
    # front of it ends TLS (both or neither).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # `mlservice worker` answers GET /health and /ready on this port (0: no health endpoint).
    worker_health_port: int = Field(default=0, ge=0, le=65535)

    # Never a hard-coded default: generated once and kept in <var_dir>/jwt-secret when unset.
    jwt_secret: SecretStr | None = None
    # Every token expires (tokens without `exp` are refused): a lifetime is required.
    jwt_lifetime_seconds: int = Field(default=3600 * 24, gt=0)
    cookie_secure: bool = False
    # How long the links in /v1 predictions (file outputs, urls.stream) open without a credential,
    # as Replicate's do; a prediction read again carries fresh ones.
    signed_url_lifetime_seconds: int = Field(default=3600, ge=60, le=7 * 86400)
    # How long a process trusts what it read of an account (active, admin), a browser session and an
    # API key before reading it again. Changes made through this process apply at once; through
    # another, within this many seconds (a submit checks the account is active in its own statement).
    auth_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    # The same for the catalog rows a submit reads (price, enabled): a change through this process
    # applies at once, through another within this many seconds.
    catalog_cache_seconds: float = Field(default=5.0, ge=0, le=60)
    # A second factor for destructive admin operations (deleting request history), sent in the
    # X-Admin-Token header by an admin. Unset: those operations are refused.
    admin_token: SecretStr | None = None

    # Single sign-on (OpenID Connect, authorization code with PKCE). One provider through the
    # MLSERVICE_OIDC_ISSUER, _CLIENT_ID, _CLIENT_SECRET, _SCOPES, _DISPLAY_NAME, _NAME, _ADMIN_CLAIM
    # and _ADMIN_VALUE variables; more as a JSON list in MLSERVICE_OIDC_PROVIDERS.
    oidc_providers: list[OidcProvider] = []
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr | None = None
    oidc_scopes: Annotated[list[str], NoDecode] = ["openid", "email", "profile"]
    oidc_display_name: str = ""
    oidc_name: str = "sso"
    oidc_admin_claim: str = ""
    oidc_admin_value: str = ""
    # Seconds a provider has to answer (discovery, keys, token), and a login to come back.
    oidc_timeout_seconds: float = Field(default=10.0, gt=0)
    oidc_login_seconds: int = Field(default=600, gt=0)
    # False: accounts log in through a provider only (the password forms and /api/auth/*/login
    # refuse; `mlservice create-admin` still works).
    password_login: bool = True

    signup_bonus: int = Field(default=100, ge=0)
    max_refill_amount: int = Field(default=100_000, gt=0)

    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_image_pixels: int = Field(default=40_000_000, gt=0)

    # Backpressure (0: no cap). One account may have this many unfinished (queued or running) jobs;
    # past it a submit is 429 too_many_unfinished_jobs. A model queues this many jobs unless the
    # catalog sets its own (models.max_queued_jobs); past it a submit is 503 model_queue_full. The
    # queue's count is re-read at most every queue_depth_cache_seconds per process.
    max_unfinished_jobs_per_user: int = Field(default=100, ge=0)
    max_queued_jobs_per_model: int = Field(default=1000, ge=0)
    queue_depth_cache_seconds: float = Field(default=1.0, ge=0, le=60)
    # Event streams (GET /api/jobs/{id}/events, /v1/predictions/{id}/stream) one user may keep open
    # in one API process (0: no cap); past it a stream is refused with 429 too_many_streams.
    max_streams_per_user: int = Field(default=20, ge=0)

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
    # (waiting only while more of its jobs are queued: a job alone starts at once) and runs them
    # as one predict_batch. Off: one job per model run.
    batching: bool = True
    job_max_attempts: int = Field(default=3, ge=1)
    # A failed attempt's job waits base * 2^(attempt-1) seconds, capped, half of it jittered,
    # before its next attempt (0: at once).
    job_retry_base_seconds: float = Field(default=1.0, ge=0, le=3600)
    job_retry_max_seconds: float = Field(default=30.0, ge=0, le=86400)
    # A running job's lease: its worker renews it every third of this while it works; a worker that
    # dies stops renewing, and the sweeper hands the job to another worker once the lease is over.
    job_lease_seconds: int = Field(default=60, ge=3)
    # How often workers sweep expired leases and republish queued jobs the broker never confirmed.
    sweep_interval_seconds: float = Field(default=5.0, gt=0)
    # A queued job unconfirmed for this long is republished (its submitter's publish failed or died).
    relay_after_seconds: float = Field(default=10.0, gt=0)

    # Retention: how long what piles up is kept before a sweeper removes it, in small batches (one
    # transaction per batch, so no long locks). 0 keeps that kind forever. Ledger entries, job rows
    # (status, cost, result) and balances are never removed: only the files of a job expire.
    # A replayed Idempotency-Key answers as the first request did for this long (Stripe: 24 h).
    retention_idempotency_keys_hours: float = Field(default=24.0, ge=0, le=24 * 36_500)
    # How long a `/v1/files` upload lives (its `expires_at`); expired uploads are removed.
    retention_uploads_hours: float = Field(default=24.0, gt=0, le=24 * 36_500)
    # A finished job's input and artifact files, counted from when it finished; the job then says
    # its files expired (`files_expired_at`) and fetching them answers 410 files_expired.
    retention_job_files_days: float = Field(default=30.0, ge=0, le=36_500)
    # Webhook deliveries, counted from their last attempt: delivered ones, and those given up,
    # which stay longer because they are how a user finds out why an endpoint never heard of a job
    # (GET /api/jobs/{id}/webhooks). Pending ones are never removed.
    retention_delivered_webhooks_days: float = Field(default=7.0, ge=0, le=36_500)
    retention_failed_webhooks_days: float = Field(default=30.0, ge=0, le=36_500)
    # A revoked API key works nowhere; its row (name, prefix, last use) is kept a while to answer
    # "which key was that?" after a leak.
    retention_revoked_api_keys_days: float = Field(default=30.0, ge=0, le=36_500)
    retention_request_history_days: float = Field(default=365.0, ge=0, le=36_500)
    # How often a process that runs workers sweeps (0: this one never does; one process is enough,
    # several are safe), and how many rows one batch removes.
    retention_sweep_interval_seconds: float = Field(default=600.0, ge=0)
    retention_batch_size: int = Field(default=500, ge=1, le=10_000)

    # Webhooks. Private, loopback and link-local destinations are refused unless allowed (a guard
    # against requests into the service's own network); a receiver gets this long to answer.
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Attempts before a delivery is given up; seconds before each retry (the last one repeats),
    # each with +-20% jitter.
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_retry_delays: Annotated[list[float], NoDecode] = [5, 30, 120, 600, 1800, 3600, 7200]
    # Deliveries in flight at once in one process.
    webhook_concurrency: int = Field(default=16, ge=1)

    # `mlservice bot`: the token BotFather gave, and a custom Bot API server (empty: Telegram's).
    telegram_token: SecretStr | None = None
    telegram_api_url: str = ""
    # Set: Telegram pushes updates to this public URL of the API's /telegram/webhook route (the API
    # process then runs the bot; `mlservice bot` only registers the webhook), with this secret token.
    telegram_webhook_url: str = ""
    telegram_webhook_secret: SecretStr | None = None
    # How long the bot waits for a job's result before telling the chat to look at /jobs later.
    telegram_job_wait_seconds: float = Field(default=300.0, gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "console": readable lines (`make run`); "json": one JSON object per line for a log collector.
    log_format: Literal["console", "json"] = "console"
    # GET /metrics (Prometheus) on the API; `mlservice worker` serves it on its health port.
    metrics_enabled: bool = True
    # A scraper's bearer token for /metrics. Unset: /metrics answers only connections from this
    # machine (loopback), never a client reaching the API through a proxy.
    metrics_token: SecretStr | None = None

    # Rate limits, "N/second|minute|hour|day" or "N/<seconds>s" (e.g. "10/minute"); "off" lifts one.
    # Sliding windows: this period's requests count, and the previous period's, weighted by how much
    # of it is still within the last period. A 429 with Retry-After answers a request over its
    # limit; every answer of a limited route carries RateLimit-* headers.
    rate_limits_enabled: bool = True
    rate_limit_login: Rate | None = Rate(10, 60)  # per client address and e-mail
    rate_limit_login_ip: Rate | None = Rate(60, 60)  # per client address, whatever the e-mail
    rate_limit_register: Rate | None = Rate(5, 60)  # per client address
    rate_limit_submit: Rate | None = Rate(120, 60)  # job submissions per user
    rate_limit_api_keys: Rate | None = Rate(20, 3600)  # API keys created per user
    # redis://host:6379/0: API processes share their rate limit counters there. Empty: each process
    # counts on its own. When Redis is down, requests are let through (and a warning logged).
    redis_url: str = ""
    rate_limit_key_prefix: str = "mlservice:ratelimit:"
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed: addresses or networks,
    # comma-separated; "*" trusts any peer (only where nothing but the proxy can reach the API).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = ["127.0.0.1", "::1"]
    # Origins allowed to call the API from a browser (https://app.example.com, comma-separated).
    # Empty: no CORS headers, so only same-origin pages can.
    cors_origins: Annotated[list[str], NoDecode] = []
    # Host headers accepted (example.com, *.example.com). "*" accepts any, fine on loopback; a
    # public deployment should name its hosts.
    trusted_hosts: Annotated[list[str], NoDecode] = ["*"]
    # Strict-Transport-Security max-age, sent on requests that came over TLS (0: no HSTS header).
    hsts_seconds: int = Field(default=365 * 24 * 3600, ge=0)

    @field_validator(
        "jwt_secret",
        "admin_token",
        "metrics_token",
        "telegram_token",
        "telegram_webhook_secret",
        "oidc_client_secret",
        "storage_dir",
        "model_cache_dir",
        "tls_certfile",
        "tls_keyfile",
        mode="before",
    )
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # `MLSERVICE_JWT_SECRET=` in a .env file means "not set", never "an empty key".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator(
        "rate_limit_login",
        "rate_limit_login_ip",
        "rate_limit_register",
        "rate_limit_submit",
        "rate_limit_api_keys",
        mode="before",
    )
    @classmethod
    def _parse_rate(cls, value: object) -> object:
        return parse_rate(value) if isinstance(value, str) else value

    @field_validator(
        "forwarded_allow_ips",
        "cors_origins",
        "trusted_hosts",
        "webhook_retry_delays",
        "oidc_scopes",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_retry_delays")
    @classmethod
    def _check_delays(cls, value: list[float]) -> list[float]:
        if not value or any(delay <= 0 for delay in value):
            raise ValueError("retry delays are one or more positive numbers of seconds")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*":
                ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            scheme, separator, host = origin.partition("://")
            if scheme not in ("http", "https") or not separator or not host or "/" in host:
                # "*" included: with credentials allowed, a wildcard would let any site act as the user.
                raise ValueError(f"{origin!r} is not an origin like https://app.example.com")
        return [origin.lower() for origin in value]

    @field_validator("trusted_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if "*" in host[1:] or (host.startswith("*") and host != "*" and not host.startswith("*.")):
                raise ValueError(f"{host!r}: a wildcard host is written *.example.com")
        return [host.lower() for host in value]

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("MLSERVICE_TLS_CERTFILE and MLSERVICE_TLS_KEYFILE go together")
        return self

    @cached_property
    def oidc(self) -> dict[str, OidcProvider]:
        """Every configured provider by name (the MLSERVICE_OIDC_ISSUER one first)."""
        providers = list(self.oidc_providers)
        if self.oidc_issuer:
            one = OidcProvider(
                name=self.oidc_name,
                issuer=self.oidc_issuer,
                client_id=self.oidc_client_id,
                client_secret=self.oidc_client_secret,
                scopes=self.oidc_scopes,
                display_name=self.oidc_display_name,
                admin_claim=self.oidc_admin_claim,
                admin_value=self.oidc_admin_value,
            )
            providers.insert(0, one)
        by_name = {p.name: p for p in providers}
        if len(by_name) != len(providers):
            raise ValueError("two OpenID providers have the same name")
        return by_name

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

    def telegram_webhook_enabled(self) -> bool:
        if not self.telegram_webhook_url:
            return False
        if self.telegram_token is None or self.telegram_webhook_secret is None:
            raise ValueError(
                "MLSERVICE_TELEGRAM_WEBHOOK_URL needs MLSERVICE_TELEGRAM_TOKEN and _WEBHOOK_SECRET"
            )
        return True

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
