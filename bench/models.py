"""Benchmark every model: predict_batch next to the raw runtime call it wraps.

    .venv/bin/python bench/models.py [--only SLUG ...] [--rounds N]

For each model and batch size: p50 latency of one call and throughput of predict_batch (decoding,
preprocessing and postprocessing included) and of the raw runtime call on inputs prepared
beforehand, and of the raw pipeline (the same libraries called by hand in a plain loop on the same
encoded inputs), and the wrapper's share of each (target: >= 90%).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.zoo.common import BenchCase  # noqa: E402

CASES = ["image_classifier", "background_removal", "movie_recommendation", "faces", "malware"]


def timed(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times


def run_case(case: BenchCase, rounds: int) -> None:
    print(f"\n{case.name}\n  raw runtime: {case.raw_label}")
    if case.pipeline_call:
        print(f"  raw pipeline: {case.pipeline_label}")
    header = ("batch", "wrapper ms", "runtime ms", "pipeline ms", "wrapper/s", "runtime/s", "pipeline/s")
    header += ("vs runtime", "vs pipeline")
    print("{:>5} {:>11} {:>11} {:>12} {:>10} {:>10} {:>11} {:>11} {:>12}".format(*header))
    for n in case.batch_sizes:
        inputs = case.make_inputs(n)
        wrapper = statistics.median(timed(lambda inputs=inputs: case.predictor.predict_batch(inputs), rounds))
        raw = statistics.median(timed(case.raw_call(n), rounds)) if case.raw_call else float("nan")
        pipeline = (
            statistics.median(timed(case.pipeline_call(n), rounds)) if case.pipeline_call else float("nan")
        )
        row = (n, wrapper, raw, pipeline, n * 1000 / wrapper, n * 1000 / raw, n * 1000 / pipeline)
        row += (raw / wrapper, pipeline / wrapper)
        print(
            "{:>5} {:>11.2f} {:>11.2f} {:>12.2f} {:>10.1f} {:>10.1f} {:>11.1f} {:>11.0%} {:>12.0%}".format(
                *row
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    cache = ROOT / "var" / "models"
    cache.mkdir(parents=True, exist_ok=True)
    for module_name in CASES:
        if args.only and module_name not in args.only:
            continue
        try:
            module = importlib.import_module(f"bench.zoo.{module_name}")
        except ModuleNotFoundError as exc:
            print(f"\n{module_name}: skipped ({exc})")
            continue
        run_case(module.bench_case(cache), args.rounds)


if __name__ == "__main__":
    main()
