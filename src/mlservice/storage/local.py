from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def validate_key(key: str) -> str:
    """Keys are relative paths of plain names: no ``..``, no leading slash, no odd characters."""
    if not _KEY.match(key) or ".." in key or len(key) > 300:
        raise ValueError(f"invalid storage key: {key!r}")
    return key


class LocalStorage:
    """Files under one directory. Keys are relative paths; nothing is ever executable."""

    joins_transactions = False

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def path(self, key: str) -> Path:
        return self.root / validate_key(key)

    async def put(self, key: str, data: bytes, *, session: AsyncSession | None = None) -> None:
        path = self.path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            # 0o640 whatever the umask says: uploads are data, never programs.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o640)
            os.replace(tmp, path)

        await anyio.to_thread.run_sync(write)

    async def get(self, key: str, *, session: AsyncSession | None = None) -> bytes:
        return await anyio.Path(self.path(key)).read_bytes()

    async def delete(self, key: str, *, session: AsyncSession | None = None) -> None:
        await anyio.Path(self.path(key)).unlink(missing_ok=True)

    async def delete_many(self, keys: Sequence[str], *, session: AsyncSession | None = None) -> None:
        paths = [self.path(key) for key in keys]

        def remove() -> None:
            emptied: set[Path] = set()
            for path in paths:
                path.unlink(missing_ok=True)
                # The directories a key made below its first one (jobs/<id>/artifacts, jobs/<id>)
                # go too once empty, or each expired job would leave two behind. A top-level one
                # (jobs/, uploads/) stays: a put may be writing into it right now.
                parent = path.parent
                while parent.parent != self.root and parent != self.root:
                    emptied.add(parent)
                    parent = parent.parent
            for directory in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
                # Not empty (another file of it lives on), or gone already: left as it is.
                with contextlib.suppress(OSError):
                    directory.rmdir()

        await anyio.to_thread.run_sync(remove)

    async def exists(self, key: str, *, session: AsyncSession | None = None) -> bool:
        return await anyio.Path(self.path(key)).exists()
