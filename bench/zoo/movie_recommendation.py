"""Movie recommendations: short text queries through MiniLM, against the raw onnxruntime call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.zoo.common import BenchCase
from mlservice.predictors.base import PredictInput
from mlservice.predictors.movie_recommendation import MODEL_OUTPUT, MovieRecommendation

# What customers type: a few words to a sentence, of varied length, so padding to the longest of a
# batch is exercised as in production.
QUERIES: tuple[str, ...] = (
    "a space adventure",
    "mafia crime family",
    "a love story on a sinking ship",
    "samurai sword fights in feudal Japan",
    "a haunted house",
    "cowboys in the wild west",
    "a detective investigates a murder in a rainy city at night",
    "musical with singing and dancing in the rain",
    "war film about soldiers in the trenches of the first world war",
    "a robot learns to love",
    "coming of age story about a teenage girl in a small town",
    "silent comedy",
    "a road trip across America with two friends",
    "dystopian future where machines control humanity",
    "a family drama about aging parents visiting their children in Tokyo",
    "heist",
)


def queries(n: int) -> list[str]:
    return [QUERIES[i % len(QUERIES)] for i in range(n)]


def bench_case(cache_dir: Path) -> BenchCase:
    predictor = MovieRecommendation(cache_dir)
    if not predictor.is_prepared():
        predictor.prepare()
    predictor.load()

    def make_inputs(n: int) -> list[PredictInput]:
        return [PredictInput(data=None, text=text, params={"top_k": 5}) for text in queries(n)]

    def raw_call(n: int) -> Callable[[], object]:
        # Tokenized as predict_batch does it (padded to the longest query of the batch), beforehand.
        feeds = predictor.tokenize(queries(n))
        session = predictor.session
        return lambda: session.run([MODEL_OUTPUT], feeds)

    return BenchCase(
        name=MovieRecommendation.slug,
        predictor=predictor,
        make_inputs=make_inputs,
        raw_call=raw_call,
        raw_label="onnxruntime session.run on pre-tokenized queries (padded to the batch's longest)",
        batch_sizes=(1, 4, 8, 16),
    )
