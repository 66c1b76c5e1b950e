"""Film recommendations for a free-text query: all-MiniLM-L6-v2 embeddings, served through onnxruntime.

This module is the predictor; its parts live in ``mlservice.predictors.movies``: the installed
packages everything is read from (``sources``, nothing is downloaded), the film catalogue
(``catalog``), the MiniLM tokenizer and encoder (``embedding``) and the embedded catalogue kept in
the model cache (``cache``). ``prepare`` embeds the catalog once and caches the matrix; a query then
costs one short model run and one matrix product.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from mlservice.predictors.base import (
    InputKind,
    InputLimits,
    InvalidInput,
    PredictInput,
    Predictor,
    PredictOutput,
)
from mlservice.predictors.checksums import ModelFileError
from mlservice.predictors.movies.cache import CatalogCache, source_fingerprint
from mlservice.predictors.movies.catalog import Movie, read_catalog
from mlservice.predictors.movies.embedding import (
    MAX_TOKENS,
    MODEL_OUTPUT,
    embed,
    embed_catalog,
    open_session,
    open_tokenizer,
    tokenize,
)
from mlservice.predictors.movies.sources import source_file
from mlservice.predictors.vector_index import VectorIndex, VectorIndexFactory

# Movie is the type of ``movies``; MODEL_OUTPUT stays importable from here for the benchmark
# (bench/zoo), which runs the raw model with it.
__all__ = ["INDEX_NAME", "MODEL_OUTPUT", "Movie", "MovieRecommendation", "MovieRecommendationParams"]

log = logging.getLogger(__name__)

# The catalog's table when the index lives in PostgreSQL (pgvector).
INDEX_NAME: Final = "movie_embeddings"

_WORD = re.compile(r"\w")


class MovieRecommendationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=5, ge=1, le=20, description="How many films to return, best match first.")


class MovieRecommendation(Predictor):
    slug: ClassVar[str] = "movie-recommendation"
    title: ClassVar[str] = "Movie recommendations (MiniLM)"
    task: ClassVar[str] = "text-search"
    description: ClassVar[str] = (
        "Describe the film you are in the mood for (a plot, a theme, a genre, a feeling) and get "
        "the closest matches among about 940 acclaimed films, with their year and a short summary."
    )
    input_kind: ClassVar[InputKind] = "text"
    params_model: ClassVar[type[BaseModel]] = MovieRecommendationParams
    default_price: ClassVar[int] = 2
    max_batch_size: ClassVar[int] = 16
    max_wait_ms: ClassVar[int] = 10
    result_label: ClassVar[tuple[str | int, ...] | None] = ("results", 0, "title")
    result_items: ClassVar[tuple[str | int, ...] | None] = ("results",)

    def __init__(
        self,
        cache_dir: Path,
        *,
        intra_op_num_threads: int | None = None,
        vector_index: VectorIndexFactory | None = None,
    ) -> None:
        super().__init__(cache_dir)
        # None keeps onnxruntime's default (one thread per physical core); set it lower when
        # several workers share a machine so they do not oversubscribe the cores.
        self.intra_op_num_threads = intra_op_num_threads
        # Exact search in memory unless told otherwise; the pool sets the configured one.
        self.vector_index = vector_index or VectorIndexFactory()
        self._session: Any = None
        self._tokenizer: Any = None
        self._index: VectorIndex | None = None
        self._movies: list[Movie] = []
        self._fingerprint: dict[str, Any] | None = None

    @property
    def cache(self) -> CatalogCache:
        # Built on each use, since cache_dir is a plain attribute that may be reassigned.
        return CatalogCache(self.cache_dir)

    @property
    def embeddings_path(self) -> Path:
        return self.cache.embeddings_path

    @property
    def catalog_path(self) -> Path:
        return self.cache.catalog_path

    @property
    def session(self) -> Any:
        """The onnxruntime session (after ``load``); the benchmark times it directly."""
        return self._session

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            raise RuntimeError("MovieRecommendation.load() must be called first.")
        return self._index

    @property
    def movies(self) -> list[Movie]:
        """The catalog, in the row order of the index."""
        return self._movies

    # -- submit time -------------------------------------------------------------------------------

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        # The API has already stripped the text, rejected empty ones and applied the length limit.
        if text is None or not _WORD.search(text):
            raise InvalidInput("The query needs at least one word.", code="empty_text")
        return {"chars": len(text)}

    # -- cached catalog ----------------------------------------------------------------------------

    def is_prepared(self) -> bool:
        try:
            return self.cache.is_current(self.fingerprint)
        except ModelFileError:
            # A source file is not the pinned one: prepare() says which.
            return False

    def prepare(self) -> None:
        # Verified before the minutes-long build rather than after it.
        self.fingerprint()
        # Always rebuilds: the CLI only calls this when is_prepared() is False or with --force.
        self.cache.write(self.fingerprint, *self._build_catalog(open_session(self.intra_op_num_threads)))

    def fingerprint(self) -> dict[str, Any]:
        """What the cache was built from; any change to it means the cache must be rebuilt.

        Raises :class:`ModelFileMismatch` when a source file is not the pinned one.
        """
        # Computed once per instance: it hashes ~25 MB of package files.
        if self._fingerprint is None:
            self._fingerprint = source_fingerprint()
        return self._fingerprint

    def _build_catalog(self, session: Any) -> tuple[list[Movie], npt.NDArray[np.float32]]:
        # A method, so that tests can stand in for the minutes-long catalog embedding.
        entries = read_catalog(source_file("catalog"))
        return [entry.movie for entry in entries], embed_catalog(session, [entry.text for entry in entries])

    # -- worker ------------------------------------------------------------------------------------

    def load(self) -> None:
        # The source files are verified (once per process) before the model and tokenizer open them.
        self.fingerprint()
        session, tokenizer = open_session(self.intra_op_num_threads), open_tokenizer(MAX_TOKENS)
        cached = self.cache.read(self.fingerprint)
        if cached is None:
            # A worker must not fail only because `mlservice models prepare` was skipped: build the
            # cache now (tens of seconds on a few cores) and keep it for the next start.
            log.warning("embedding the film catalog in load(); run `mlservice models prepare` to avoid it")
            cached = self._build_catalog(session)
            self.cache.write(self.fingerprint, *cached)
        self._movies, embeddings = cached
        self._index = self.vector_index.open(INDEX_NAME, embeddings)
        self._session, self._tokenizer = session, tokenizer
        # The first runs allocate buffers and pick kernels; paying that here keeps it out of the
        # first customer's latency.
        for _ in range(2):
            self._index.search(self.embed(["a film to warm up the model"]), 1)

    def tokenize(self, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
        """The model's inputs for ``texts``, padded to the longest of them."""
        return tokenize(self._require_tokenizer(), texts)

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """L2-normalised sentence embeddings, ``(len(texts), 384)``."""
        if self._session is None:
            raise RuntimeError("MovieRecommendation.load() must be called first.")
        return embed(self._session, self._require_tokenizer(), texts)

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        if not inputs:
            return []
        if self._session is None or self._index is None:
            raise RuntimeError("MovieRecommendation.load() must be called before predict_batch().")
        queries = []
        for item in inputs:
            if item.text is None or not _WORD.search(item.text):
                raise InvalidInput("The query needs at least one word.", code="empty_text")
            queries.append(item.text)
        top_ks = [int(item.params.get("top_k", 5)) for item in inputs]

        # One tokenizer call, one model run and one search for the whole batch; each query then
        # keeps the first top_k of the largest top_k (the ranking does not depend on k).
        started = time.perf_counter()
        scores, indices = self._index.search(self.embed(queries), max(top_ks))
        # Batch-wide, and never the queries: a batch's log lines go to all its jobs.
        log.info(
            "%d quer%s embedded and searched in %.0f ms",
            len(queries),
            "y" if len(queries) == 1 else "ies",
            (time.perf_counter() - started) * 1000,
        )
        outputs = []
        for query, top_k, row_scores, row_indices in zip(
            queries, top_ks, scores.tolist(), indices.tolist(), strict=True
        ):
            results = []
            for score, index in zip(row_scores[:top_k], row_indices[:top_k], strict=True):
                movie = self._movies[index]
                results.append(
                    {
                        "title": movie.title,
                        "year": movie.year,
                        "score": round(score, 4),
                        "summary": movie.summary,
                    }
                )
            outputs.append(PredictOutput(result={"query": query, "results": results}))
        return outputs

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError("MovieRecommendation.load() must be called first.")
        return self._tokenizer
