"""Where the client finds its server and key: the environment first, then its config file.

The file (``$MLSERVICE_CONFIG``, else ``$XDG_CONFIG_HOME/mlservice/client.json``, else
``~/.config/mlservice/client.json``) holds ``{"url": ..., "api_key": ..., "key_id": ...}``, is only
readable by its owner (mode 600) and is replaced whole, never left half-written.
``MLSERVICE_URL`` and ``MLSERVICE_API_KEY`` override what it says.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mlservice.client.errors import ClientError

DEFAULT_URL = "http://127.0.0.1:8000"
CONFIG_ENV = "MLSERVICE_CONFIG"
URL_ENV = "MLSERVICE_URL"
KEY_ENV = "MLSERVICE_API_KEY"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None = None
    key_id: str | None = None  # the stored key's id, so that the next login can revoke it


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".config") / "mlservice" / "client.json"


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"{url!r} is not a server URL; give one like {DEFAULT_URL}", exit_code=2)
    return url


def read_stored(path: Path | None = None) -> ClientConfig | None:
    """What the config file says, or None when there is none."""
    path = path or config_path()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            raise ValueError("no url")
    except ValueError:
        raise ClientError(f"{path} is not a client config; run `mlservice login` again") from None
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            print(f"warning: {path} is readable by others; `chmod 600 {path}`", file=sys.stderr)
    key, key_id = data.get("api_key"), data.get("key_id")
    return ClientConfig(
        url=data["url"],
        api_key=key if isinstance(key, str) and key else None,
        key_id=key_id if isinstance(key_id, str) else None,
    )


def load_config() -> ClientConfig:
    """The server and key to use: environment variables over the config file over the default."""
    stored = read_stored()
    url = os.environ.get(URL_ENV, "").strip() or (stored.url if stored else DEFAULT_URL)
    key = os.environ.get(KEY_ENV, "").strip() or (stored.api_key if stored else None)
    return ClientConfig(normalize_url(url), key, stored.key_id if stored else None)


def save_config(config: ClientConfig, path: Path | None = None) -> Path:
    """Write the config readable by its owner only: a new file in the same folder, created with
    mode 600 (never briefly wider), then renamed over the old one."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = json.dumps(
        {"url": config.url, "api_key": config.api_key, "key_id": config.key_id}, indent=2
    ).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(body + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
