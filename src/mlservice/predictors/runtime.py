"""How every predictor opens its ONNX model: one place for the onnxruntime settings we serve with."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cpu_session(path: Path, *, intra_op_num_threads: int | None = None) -> Any:
    """An onnxruntime CPU session with full graph optimisation and sequential execution.

    Full optimisation also folds int8 weight dequantisation into constants once, at load (the MiniLM
    model is 3-4x slower per query without it). Our graphs are chains whose layers each fill the
    cores, so inter-op threads would only idle. ``intra_op_num_threads`` None keeps onnxruntime's
    default (one thread per physical core); set it lower when several workers share a machine.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if intra_op_num_threads is not None:
        options.intra_op_num_threads = intra_op_num_threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
