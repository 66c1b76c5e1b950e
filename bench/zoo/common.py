"""What each model contributes to bench/models.py: its predictor, inputs, and the raw runtime call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mlservice.predictors.base import PredictInput, Predictor


@dataclass
class BenchCase:
    name: str
    predictor: Predictor  # loaded
    # n inputs for predict_batch (realistic: encoded uploads / texts as the worker gets them)
    make_inputs: Callable[[int], list[PredictInput]]
    # for a batch size n, a thunk doing the raw runtime call that predict_batch wraps, on inputs
    # prepared beforehand (e.g. onnxruntime session.run on ready tensors), or None if not meaningful
    raw_call: Callable[[int], Callable[[], object]] | None
    raw_label: str  # what the raw call is, e.g. "onnxruntime session.run on 224x224 tensors"
    batch_sizes: tuple[int, ...] = (1, 4, 8)
    # The raw pipeline: the same work done by hand in a plain loop, from the same encoded inputs
    # (decode + preprocess + runtime + postprocess, with the same libraries), or None where the
    # runtime call is already the whole job. The wrapper's own cost is the gap to this one.
    pipeline_call: Callable[[int], Callable[[], object]] | None = None
    pipeline_label: str = ""
