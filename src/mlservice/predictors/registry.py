"""Finds predictors: the built-in ones plus any installed package's ``mlservice.predictors`` entry points."""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from mlservice.predictors.base import Predictor

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mlservice.predictors"


def builtin_predictors() -> list[type[Predictor]]:
    from mlservice.predictors.background_removal import BackgroundRemoval
    from mlservice.predictors.faces import FaceEnroll, FaceIdentify
    from mlservice.predictors.image_classifier import ImageClassifier
    from mlservice.predictors.malware import MalwareDetection
    from mlservice.predictors.movie_recommendation import MovieRecommendation

    return [
        ImageClassifier,
        BackgroundRemoval,
        MovieRecommendation,
        FaceEnroll,
        FaceIdentify,
        MalwareDetection,
    ]


def discover_predictors() -> dict[str, type[Predictor]]:
    found: dict[str, type[Predictor]] = {cls.slug: cls for cls in builtin_predictors()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception:
            log.exception("predictor entry point %s failed to load", ep.name)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Predictor)):
            log.error("entry point %s is not a Predictor subclass", ep.name)
            continue
        found.setdefault(cls.slug, cls)
    return found
