"""A predictor that returns at once, to measure the job machinery alone (bench/scale.py).

The API and the workers must both know it: the API puts it in the catalog, the workers consume
its queue. ``mlservice serve`` and ``mlservice worker`` find predictors through the
``mlservice.predictors`` entry point group, so :func:`install_plugin` writes a tiny distribution
(a ``.dist-info`` with that entry point) into a directory; with that directory and the repository
root on ``PYTHONPATH``, unmodified ``mlservice`` processes (those :class:`LocalDeployment` starts
included) serve ``bench-noop`` like any installed model package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from mlservice.predictors.base import InputKind, InputLimits, PredictInput, Predictor, PredictOutput

ENTRY_POINT = "bench.noop:NoOp"


class NoOp(Predictor):
    slug: ClassVar[str] = "bench-noop"
    title: ClassVar[str] = "No-op (benchmarks)"
    task: ClassVar[str] = "noop"
    description: ClassVar[str] = "Returns an empty result at once: measures the job machinery alone."
    input_kind: ClassVar[InputKind] = "text"
    default_price: ClassVar[int] = 1
    max_batch_size: ClassVar[int] = 16
    max_wait_ms: ClassVar[int] = 0

    @classmethod
    def prepare_input(cls, data: bytes | None, text: str | None, limits: InputLimits) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        return None

    def predict_batch(self, inputs: list[PredictInput]) -> list[PredictOutput]:
        return [PredictOutput({"ok": True}) for _ in inputs]


def install_plugin(directory: Path) -> Path:
    """Write the ``bench-noop`` distribution into ``directory``; put it on PYTHONPATH to use it."""
    dist = directory / "mlservice_bench_noop-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: mlservice-bench-noop\nVersion: 0.0.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        f"[mlservice.predictors]\n{NoOp.slug} = {ENTRY_POINT}\n", encoding="utf-8"
    )
    return directory
