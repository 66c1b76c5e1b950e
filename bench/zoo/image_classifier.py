from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from bench.zoo.common import BenchCase
from mlservice.predictors.base import PredictInput
from mlservice.predictors.image_classifier import ImageClassifier, preprocess


def bench_case(cache_dir: Path) -> BenchCase:
    classifier = ImageClassifier(cache_dir)
    if not classifier.is_prepared():
        classifier.prepare()
    classifier.load()
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="JPEG", quality=90)
    jpeg = buf.getvalue()
    tensor = preprocess([Image.fromarray(data.chelsea())])

    def raw_call(n: int) -> object:
        batch = np.repeat(tensor, n, axis=0)
        return lambda: classifier._run(batch)

    def pipeline_call(n: int) -> object:
        def run() -> object:
            images = []
            for encoded in [jpeg] * n:
                image = Image.open(io.BytesIO(encoded))
                image.draft("RGB", (256, 256))  # libjpeg's DCT scaling, as the wrapper asks for
                images.append(image.convert("RGB"))
            logits = classifier._run(preprocess(images))
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities = exp / exp.sum(axis=1, keepdims=True)
            return np.argsort(probabilities, axis=1)[:, -5:]

        return run

    return BenchCase(
        name=classifier.slug,
        predictor=classifier,
        make_inputs=lambda n: [PredictInput(data=jpeg, text=None, params={"top_k": 5}) for _ in range(n)],
        raw_call=raw_call,  # type: ignore[arg-type]
        raw_label="onnxruntime run on ready 224x224 tensors",
        pipeline_call=pipeline_call,  # type: ignore[arg-type]
        pipeline_label="Pillow open + draft + RGB, crop/resize + normalise, onnxruntime, softmax + top 5",
    )
