"""The embedded film catalogue kept in the model cache, and the fingerprint of what it was built from.

Two files: ``movies_minilm.npy`` holds the ``(films, 384)`` float32 matrix and ``movies_minilm.json``
the films in its row order, the fingerprint of the installed packages it was built from and the
matrix's hash. ``prepare`` writes them once; every worker start reads them instead of embedding
the catalogue again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mlservice.predictors.checksums import verify
from mlservice.predictors.movies.catalog import Movie
from mlservice.predictors.movies.embedding import CATALOG_MAX_TOKENS, EMBEDDING_DIM
from mlservice.predictors.movies.sources import SOURCE_FILES, source_file

log = logging.getLogger(__name__)

EMBEDDINGS_FILENAME: Final = "movies_minilm.npy"
CATALOG_FILENAME: Final = "movies_minilm.json"
# Bump when the cached files change meaning (text cleaning, pooling...), so old caches rebuild.
CACHE_FORMAT: Final = 1


def source_fingerprint() -> dict[str, Any]:
    """What a cache is built from; any change to it means the cache must be rebuilt.

    Each source file is verified against its pinned SHA-256 on the way (:class:`ModelFileMismatch`
    for one that differs), so nothing is built from, or served with, a file other than the pinned one.
    """
    files = {name: source_file(name) for name in SOURCE_FILES}
    distributions = [item.distribution for item in SOURCE_FILES.values()]
    return {
        "format": CACHE_FORMAT,
        "catalog_max_tokens": CATALOG_MAX_TOKENS,
        "packages": {name: metadata.version(name) for name in distributions},
        # Versions alone would miss a package rebuilt in place; hashing ~25 MB is cheap.
        "sha256": {name: verify(SOURCE_FILES[name], path) for name, path in files.items()},
    }


# How the methods below get the fingerprint: they call it only once the cache files have been read,
# since it hashes ~25 MB of package files and raises when a package is missing (an empty cache is
# then simply not current).
Fingerprint = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class CatalogCache:
    """The cached catalogue in ``cache_dir``."""

    cache_dir: Path

    @property
    def embeddings_path(self) -> Path:
        return self.cache_dir / EMBEDDINGS_FILENAME

    @property
    def catalog_path(self) -> Path:
        return self.cache_dir / CATALOG_FILENAME

    def is_current(self, fingerprint: Fingerprint) -> bool:
        """Whether both files are there and the catalogue was built from ``fingerprint()``."""
        if not self.embeddings_path.is_file():
            return False
        try:
            stored = json.loads(self.catalog_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(stored, dict) and stored.get("fingerprint") == fingerprint()

    def write(
        self, fingerprint: Fingerprint, movies: list[Movie], embeddings: npt.NDArray[np.float32]
    ) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, embeddings, allow_pickle=False)
        matrix = buffer.getvalue()
        # The matrix goes first and the JSON, which holds the fingerprint is_current() checks,
        # last; the JSON also pins the matrix's hash, so a torn pair from two concurrent prepares
        # is detected at load time instead of serving rows under the wrong titles.
        _write_atomically(self.embeddings_path, matrix)
        catalog = {
            "fingerprint": fingerprint(),
            "embeddings_sha256": _sha256(matrix),
            "shape": list(embeddings.shape),
            "movies": [{"title": m.title, "year": m.year, "summary": m.summary} for m in movies],
        }
        _write_atomically(self.catalog_path, json.dumps(catalog, ensure_ascii=False, indent=1).encode())
        log.info("cached %d film embeddings in %s", len(movies), self.embeddings_path)

    def read(self, fingerprint: Fingerprint) -> tuple[list[Movie], npt.NDArray[np.float32]] | None:
        """The cached catalogue, or None (logged) when it is missing, stale or inconsistent."""
        try:
            stored = json.loads(self.catalog_path.read_text(encoding="utf-8"))
            matrix = self.embeddings_path.read_bytes()
        except FileNotFoundError:
            log.warning("no film embeddings cached in %s", self.cache_dir)
            return None
        except (OSError, ValueError) as exc:
            log.warning("the film embedding cache in %s is unreadable: %s", self.cache_dir, exc)
            return None
        if stored.get("fingerprint") != fingerprint():
            log.warning("the film embedding cache in %s was built from other packages", self.cache_dir)
            return None
        if stored.get("embeddings_sha256") != _sha256(matrix):
            log.warning("%s does not match %s", self.embeddings_path, self.catalog_path)
            return None
        embeddings = np.load(io.BytesIO(matrix), allow_pickle=False)
        movies = [Movie(m["title"], m["year"], m["summary"]) for m in stored["movies"]]
        if embeddings.dtype != np.float32 or embeddings.shape != (len(movies), EMBEDDING_DIM):
            log.warning("%s has an unexpected shape %s", self.embeddings_path, embeddings.shape)
            return None
        return movies, embeddings


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    # Written next to the destination and renamed, so a reader never sees a half-written file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
