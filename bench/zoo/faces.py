"""Face identification (dlib): predict_batch on uploaded JPEGs against the raw dlib calls it wraps."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dlib
import numpy as np
from PIL import Image
from skimage import data

from bench.zoo.common import BenchCase
from mlservice.faces.service import EMBEDDING_SIZE, Gallery
from mlservice.predictors.base import PredictInput
from mlservice.predictors.faces import DETECTION_MIN_SCORE, NUM_JITTERS, FaceIdentify, FaceModels

GALLERY_STRANGERS = 100


def astronaut_jpeg() -> bytes:
    buffer = io.BytesIO()
    # Through getattr: scikit-image's sample loaders are untyped.
    pixels = np.asarray(getattr(data, "astronaut")())  # noqa: B009
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def raw_embeddings(models: FaceModels, images: list[np.ndarray]) -> Any:
    """What predict_batch does for 512x512 images, as bare dlib calls with the same settings: a scan
    without resizing or upsampling, 5-point landmarks, one batched network call."""
    landmarks = []
    for pixels in images:
        rectangles, _scores, _indices = models.detector.run(pixels, 0, DETECTION_MIN_SCORE)
        landmarks.append(dlib.full_object_detections([models.shape_predictor(pixels, r) for r in rectangles]))
    return models.recognizer.compute_face_descriptor(images, landmarks, NUM_JITTERS)


def bench_case(cache_dir: Path) -> BenchCase:
    predictor = FaceIdentify(cache_dir)
    predictor.load()
    assert predictor.models is not None
    models = predictor.models

    upload = astronaut_jpeg()
    # Decoded once, as the raw calls' "inputs prepared beforehand".
    pixels = np.asarray(Image.open(io.BytesIO(upload)).convert("RGB"))

    # A gallery of strangers plus the astronaut, so every call is a real match against 101 entries.
    # The strangers are Gaussian vectors with the norm of a real embedding: far from everyone, like
    # other people's faces.
    (astronaut_faces,) = raw_embeddings(models, [pixels])
    astronaut = np.asarray(list(astronaut_faces[0]), dtype=np.float32)
    rng = np.random.default_rng(0)
    strangers = rng.normal(size=(GALLERY_STRANGERS, EMBEDDING_SIZE)).astype(np.float32)
    strangers *= np.linalg.norm(astronaut) / np.linalg.norm(strangers, axis=1, keepdims=True)
    gallery = Gallery(
        [uuid.uuid4() for _ in range(GALLERY_STRANGERS + 1)],
        [f"stranger {i}" for i in range(GALLERY_STRANGERS)] + ["astronaut"],
        np.vstack([strangers, astronaut[None, :]]),
    )

    def make_inputs(n: int) -> list[PredictInput]:
        return [
            PredictInput(data=upload, text=None, params={"threshold": 0.6}, context=gallery) for _ in range(n)
        ]

    def raw_call(n: int) -> Callable[[], object]:
        images = [pixels] * n
        return lambda: raw_embeddings(models, images)

    return BenchCase(
        name="face-identify",
        predictor=predictor,
        make_inputs=make_inputs,
        raw_call=raw_call,
        raw_label=(
            "dlib HOG detector.run (upsample 0, threshold 0.5) + 5-point shape_predictor + one batched "
            "compute_face_descriptor (num_jitters=1) on decoded 512x512 RGB arrays"
        ),
        batch_sizes=(1, 4),
    )
