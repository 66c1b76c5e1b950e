from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from bench.zoo.common import BenchCase
from mlservice.predictors.background_removal import BackgroundRemoval, preprocess
from mlservice.predictors.base import PredictInput


def bench_case(cache_dir: Path) -> BenchCase:
    remover = BackgroundRemoval(cache_dir)
    if not remover.is_prepared():
        remover.prepare()
    remover.load()
    picture = Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    tensor = preprocess([picture])
    session, input_name, output_name = remover._session, remover._input_name, remover._output_name

    def raw_call(n: int) -> Callable[[], object]:
        batch = np.repeat(tensor, n, axis=0)

        # The model's batch axis is fixed at 1, so a batch is n runs, as in predict_batch.
        def run() -> object:
            return [session.run([output_name], {input_name: batch[i : i + 1]}) for i in range(n)]

        return run

    return BenchCase(
        name=remover.slug,
        predictor=remover,
        make_inputs=lambda n: [PredictInput(data=jpeg, text=None, params={}) for _ in range(n)],
        raw_call=raw_call,
        raw_label="onnxruntime run on ready 1x3x320x320 tensors, looped over the batch",
    )
