"""The pgvector index against a real PostgreSQL with the extension, and how the index is chosen.

The machine's PostgreSQL has no pgvector, so the session starts its own server from the build that
the ``pgserver`` package ships (PostgreSQL 16 with ``vector.so``), on a unix socket in a temporary
directory (tests/fixtures/pgserver.py). If it cannot start, the tests fail: they are never skipped
for want of a server.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest

from mlservice.predictors.base import PredictInput
from mlservice.predictors.movie_recommendation import INDEX_NAME, MovieRecommendation
from mlservice.predictors.pool import PredictorPool
from mlservice.predictors.vector_index import (
    NumpyCosineIndex,
    PgVectorIndex,
    VectorIndexFactory,
    VectorIndexUnavailable,
)
from mlservice.settings import Settings
from tests.fixtures.pgserver import throwaway_postgres
from tests.fixtures.predictors import EchoText, VectorEcho

SPACE_FILMS = ("2001: A Space Odyssey", "Alien", "Star Wars")
# The machine's PostgreSQL (no pgvector), as in conftest.py.
PG_SERVER = os.environ.get("MLSERVICE_TEST_PG", "postgres@127.0.0.1:5432")


# -- a throwaway PostgreSQL with pgvector -------------------------------------------------------------


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    with throwaway_postgres("mlservice-pgvector") as server:
        yield server.url()


def normalized(rng: np.random.Generator, rows: int, dim: int) -> npt.NDArray[np.float32]:
    vectors = rng.standard_normal((rows, dim)).astype(np.float32)
    normalized_vectors: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return normalized_vectors


def close(index: object) -> None:
    if isinstance(index, PgVectorIndex):
        index.close()


# -- the index ----------------------------------------------------------------------------------------


def test_same_results_as_numpy(pgvector_url: str) -> None:
    rng = np.random.default_rng(7)
    vectors = normalized(rng, 200, 16)
    vectors[[10, 150]] = vectors[3]  # three identical rows: exact ties, ordered by row number
    vectors[42] = vectors[41]
    queries = np.concatenate([normalized(rng, 6, 16), vectors[[3, 41]]])
    reference = NumpyCosineIndex(vectors)
    # The two compute the cosine in float32 in different orders (about 1e-7 apart), so rows
    # whose scores are closer than that could swap; this data has no such near-ties.
    full_scores, _ = reference.search(queries, len(vectors))
    gaps = -np.diff(full_scores, axis=1)
    assert gaps[gaps > 0].min() > 1e-6

    index = PgVectorIndex(pgvector_url, "test_same_results", vectors)
    try:
        assert index.size == 200
        for k in (1, 2, 3, 7, 199, 200, 250):
            scores, indices = index.search(queries, k)
            expected_scores, expected_indices = reference.search(queries, k)
            assert indices.shape == scores.shape == (len(queries), min(k, 200))
            assert indices.dtype == np.int64
            assert scores.dtype == np.float32
            np.testing.assert_array_equal(indices, expected_indices)
            np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
        _, indices = index.search(queries[-2:], 4)
        assert indices[0, :3].tolist() == [3, 10, 150]
        assert indices[1, :2].tolist() == [41, 42]
        # One query, as a batch of one.
        np.testing.assert_array_equal(index.search(queries[:1], 5)[1], reference.search(queries[:1], 5)[1])
        with pytest.raises(ValueError, match="shape"):
            index.search(np.zeros((1, 8), dtype=np.float32), 1)
        with pytest.raises(ValueError, match="k must be"):
            index.search(queries, 0)
    finally:
        index.close()


def test_table_is_loaded_once_and_again_when_the_vectors_change(pgvector_url: str) -> None:
    rng = np.random.default_rng(11)
    first, second = normalized(rng, 50, 8), normalized(rng, 30, 12)

    def loaded_at() -> Any:
        with psycopg.connect(pgvector_url) as connection:
            row = connection.execute(
                "SELECT loaded_at FROM vector_index_catalogs WHERE name = 'test_reload'"
            ).fetchone()
        assert row is not None
        return row[0]

    index = PgVectorIndex(pgvector_url, "test_reload", first)
    stamp = loaded_at()
    again = PgVectorIndex(pgvector_url, "test_reload", first)
    assert loaded_at() == stamp  # the same vectors: not loaded twice
    again.close()

    # Another catalog under the same name (another version of the service) replaces the table;
    # each index notices on its next search and answers from its own vectors.
    other = PgVectorIndex(pgvector_url, "test_reload", second)
    try:
        queries_first, queries_second = normalized(rng, 3, 8), normalized(rng, 3, 12)
        for _ in range(2):
            for idx, vectors, queries in ((index, first, queries_first), (other, second, queries_second)):
                scores, indices = idx.search(queries, 5)
                expected_scores, expected_indices = NumpyCosineIndex(vectors).search(queries, 5)
                np.testing.assert_array_equal(indices, expected_indices)
                np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
    finally:
        index.close()
        other.close()


def test_reconnects_when_the_connection_breaks(pgvector_url: str) -> None:
    vectors = normalized(np.random.default_rng(3), 40, 8)
    index = PgVectorIndex(pgvector_url, "test_reconnect", vectors)
    try:
        queries = vectors[:2]
        expected = NumpyCosineIndex(vectors).search(queries, 3)[1]
        np.testing.assert_array_equal(index.search(queries, 3)[1], expected)
        with psycopg.connect(pgvector_url, autocommit=True) as admin:
            terminated = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'mlservice vector index'"
            ).fetchall()
        assert terminated
        np.testing.assert_array_equal(index.search(queries, 3)[1], expected)
    finally:
        index.close()


def test_bad_table_names_are_refused(pgvector_url: str) -> None:
    vectors = normalized(np.random.default_rng(0), 4, 4)
    for name in ("Movies", "movie-embeddings", "x; DROP TABLE y", "vector_index_catalogs", ""):
        with pytest.raises(ValueError, match="cannot name"):
            PgVectorIndex(pgvector_url, name, vectors)


# -- choosing the index -------------------------------------------------------------------------------


def test_auto_uses_pgvector_where_the_server_has_it(
    pgvector_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    vectors = normalized(np.random.default_rng(5), 10, 4)
    with caplog.at_level(logging.INFO, logger="mlservice.predictors.vector_index"):
        index = VectorIndexFactory("auto", pgvector_url).open("test_auto", vectors)
    try:
        assert isinstance(index, PgVectorIndex)
        assert "exact pgvector search" in caplog.text
    finally:
        close(index)
    index = VectorIndexFactory("numpy", pgvector_url).open("test_auto", vectors)
    assert isinstance(index, NumpyCosineIndex)


def machine_server_has_pgvector(url: str) -> bool:
    with psycopg.connect(url) as connection:
        return (
            connection.execute("SELECT FROM pg_available_extensions WHERE name = 'vector'").fetchone()
            is not None
        )


def test_auto_falls_back_to_numpy_without_the_extension(caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql://{PG_SERVER}/postgres"
    if machine_server_has_pgvector(url):
        pytest.skip(f"the PostgreSQL at {PG_SERVER} has pgvector; this checks a server without it")
    vectors = normalized(np.random.default_rng(5), 10, 4)
    with caplog.at_level(logging.INFO, logger="mlservice.predictors.vector_index"):
        index = VectorIndexFactory("auto", url).open("test_fallback", vectors)
    assert isinstance(index, NumpyCosineIndex)
    assert "exact NumPy search" in caplog.text
    assert "no pgvector extension" in caplog.text
    with pytest.raises(VectorIndexUnavailable, match="no pgvector extension"):
        VectorIndexFactory("pgvector", url).open("test_fallback", vectors)


def test_without_postgresql(tmp_path: Path) -> None:
    vectors = normalized(np.random.default_rng(5), 10, 4)
    assert isinstance(VectorIndexFactory("auto", "").open("test_none", vectors), NumpyCosineIndex)
    with pytest.raises(VectorIndexUnavailable, match="needs PostgreSQL"):
        VectorIndexFactory("pgvector", "").open("test_none", vectors)
    # A server that does not answer: auto still serves, from memory; pgvector mode fails.
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}"
    assert isinstance(VectorIndexFactory("auto", nowhere).open("test_none", vectors), NumpyCosineIndex)
    with pytest.raises(psycopg.OperationalError):
        VectorIndexFactory("pgvector", nowhere).open("test_none", vectors)


def test_settings_derive_the_url_from_a_postgresql_database() -> None:
    def settings(**values: Any) -> Settings:
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    assert settings().vector_index == "auto"
    assert settings(var_dir=Path("/nowhere")).resolved_vector_index_url == ""
    pg = settings(database_url="postgresql+asyncpg://svc:secret@db.internal:5433/mlservice")
    assert pg.resolved_vector_index_url == "postgresql://svc:secret@db.internal:5433/mlservice"
    own = settings(database_url="postgresql+asyncpg://db/x", vector_index_url="postgresql://vectors/y")
    assert own.resolved_vector_index_url == "postgresql://vectors/y"


async def test_pool_hands_the_configured_factory_to_predictors_that_search(
    pgvector_url: str, tmp_path: Path
) -> None:
    factory = VectorIndexFactory("pgvector", pgvector_url)
    pool = PredictorPool({"v": VectorEcho, "e": EchoText}, tmp_path, vector_index=factory)
    searching = await pool.get("v")
    assert isinstance(searching, VectorEcho)
    assert searching.vector_index is factory
    assert isinstance(searching.index, PgVectorIndex)
    close(searching.index)
    assert isinstance(await pool.get("e"), EchoText)
    # Without a factory, the predictor keeps its own default.
    plain = await PredictorPool({"v": VectorEcho}, tmp_path).get("v")
    assert isinstance(plain, VectorEcho)
    assert isinstance(plain.index, NumpyCosineIndex)


# -- the movie recommender on pgvector ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_recommender(model_cache: Path, pgvector_url: str) -> Iterator[MovieRecommendation]:
    predictor = MovieRecommendation(
        model_cache, intra_op_num_threads=2, vector_index=VectorIndexFactory("pgvector", pgvector_url)
    )
    predictor.load()
    yield predictor
    close(predictor.index)


def test_movie_index_is_pgvector(pg_recommender: MovieRecommendation, pgvector_url: str) -> None:
    assert isinstance(pg_recommender.index, PgVectorIndex)
    assert pg_recommender.index.size == len(pg_recommender.movies) == 941
    with psycopg.connect(pgvector_url) as connection:
        row = connection.execute(f"SELECT count(*), min(id), max(id) FROM {INDEX_NAME}").fetchone()
    assert row == (941, 0, 940)


def test_movie_mafia_crime_family_is_the_godfather(pg_recommender: MovieRecommendation) -> None:
    item = PredictInput(data=None, text="mafia crime family", params={"top_k": 5})
    results = pg_recommender.predict_batch([item])[0].result["results"]
    assert results[0]["title"] == "The Godfather"
    assert results[0]["year"] == 1972


def test_movie_space_adventure_prefers_space_films(pg_recommender: MovieRecommendation) -> None:
    index = pg_recommender.index
    _, indices = index.search(pg_recommender.embed(["a space adventure"]), index.size + 10)
    assert indices.shape == (1, 941)
    ranking: dict[str, int] = {}
    for rank, row in enumerate(indices[0].tolist(), start=1):
        ranking.setdefault(pg_recommender.movies[row].title, rank)
    best_space = min(ranking[title] for title in SPACE_FILMS)
    assert best_space < ranking["Titanic"]
    assert best_space < ranking["The Godfather"]
    assert best_space <= 10


def test_movie_results_match_the_numpy_index(pg_recommender: MovieRecommendation) -> None:
    reference = NumpyCosineIndex(np.load(pg_recommender.embeddings_path))
    queries = pg_recommender.embed(
        ["mafia crime family", "a space adventure", "a samurai in feudal Japan", "love in Paris"]
    )
    scores, indices = pg_recommender.index.search(queries, 10)
    expected_scores, expected_indices = reference.search(queries, 10)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-5)
