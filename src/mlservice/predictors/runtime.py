"""How every predictor opens its ONNX model: one place for the onnxruntime settings we serve with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class RuntimeOptions:
    """Process-wide defaults, set once from the settings when the process builds its components."""

    # None: onnxruntime's default, one thread per physical core.
    intra_op_num_threads: int | None = None
    # Spinning keeps intra-op threads busy-waiting between runs: a little lower latency when the
    # model has the machine to itself, but on cores shared with the API, PostgreSQL and the broker
    # it burnt 51 ms of CPU per 6 ms classifier run (10.7 ms without), taken from everyone else.
    allow_spinning: bool = False


OPTIONS = RuntimeOptions()


def configure(*, intra_op_num_threads: int | None, allow_spinning: bool) -> None:
    OPTIONS.intra_op_num_threads = intra_op_num_threads
    OPTIONS.allow_spinning = allow_spinning


def cpu_session(path: Path, *, intra_op_num_threads: int | None = None) -> Any:
    """An onnxruntime CPU session with full graph optimisation and sequential execution.

    Full optimisation also folds int8 weight dequantisation into constants once, at load (the MiniLM
    model is 3-4x slower per query without it). Our graphs are chains whose layers each fill the
    cores, so inter-op threads would only idle. ``intra_op_num_threads`` None keeps onnxruntime's
    default (or ``MLSERVICE_INFERENCE_THREADS``); set it lower when several workers share a machine.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    threads = intra_op_num_threads if intra_op_num_threads is not None else OPTIONS.intra_op_num_threads
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if OPTIONS.allow_spinning else "0"
    )
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
