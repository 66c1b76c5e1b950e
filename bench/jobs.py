"""Benchmark: the image classifier alone, then whole jobs through the API on the embedded default.

    .venv/bin/python bench/jobs.py [--jobs 200]

Prints two tables: predict_batch latency/throughput per batch size, and end-to-end job
throughput (submit → succeeded, SQLite, in-process workers, requests through the ASGI app).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image
from skimage import data

from mlservice.app import create_app
from mlservice.migrations.runner import upgrade
from mlservice.predictors.base import PredictInput
from mlservice.predictors.image_classifier import ImageClassifier
from mlservice.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def chelsea_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_predictor(cache: Path, image: bytes) -> None:
    classifier = ImageClassifier(cache)
    if not classifier.is_prepared():
        classifier.prepare()
    classifier.load()
    print("\nImage classifier (EfficientNet-Lite0, onnxruntime, decode + preprocess included)")
    print(f"{'batch':>5} {'p50 ms/batch':>13} {'p95 ms/batch':>13} {'images/s':>9}")
    for size in (1, 4, 8):
        batch = [PredictInput(data=image, text=None, params={"top_k": 5}) for _ in range(size)]
        classifier.predict_batch(batch)
        times = []
        for _ in range(max(10, 80 // size)):
            started = time.perf_counter()
            classifier.predict_batch(batch)
            times.append((time.perf_counter() - started) * 1000)
        p50 = statistics.median(times)
        print(f"{size:>5} {p50:>13.1f} {percentile(times, 0.95):>13.1f} {size * 1000 / p50:>9.1f}")


async def bench_jobs(cache: Path, image: bytes, count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        url = f"sqlite+aiosqlite:///{var / 'bench.db'}"
        await asyncio.to_thread(upgrade, url)
        settings = Settings(
            _env_file=None,
            var_dir=var,
            database_url=url,
            model_cache_dir=cache,
            preload_models=True,
            # one user submits --jobs jobs as fast as it can: no rate limit, no backpressure cap
            rate_limits_enabled=False,
            max_unfinished_jobs_per_user=0,
            max_queued_jobs_per_model=0,
        )  # type: ignore[call-arg]
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=120) as http:
                creds = {"email": "bench@example.com", "password": "throughput-2026"}
                await http.post("/api/auth/register", json=creds)
                token = (
                    await http.post(
                        "/api/auth/jwt/login",
                        data={"username": creds["email"], "password": creds["password"]},
                    )
                ).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                await http.post("/api/wallet/refill", json={"amount": 100_000}, headers=headers)
                await app.state.components.pool.get("image-classification")

                submit_ms: list[float] = []
                submitted: dict[str, float] = {}
                started = time.perf_counter()
                for _ in range(count):
                    t0 = time.perf_counter()
                    r = await http.post(
                        "/api/jobs",
                        data={"model": "image-classification"},
                        files={"file": ("cat.jpg", image, "image/jpeg")},
                        headers=headers,
                    )
                    submit_ms.append((time.perf_counter() - t0) * 1000)
                    submitted[r.json()["id"]] = t0
                done: dict[str, float] = {}
                while len(done) < count:
                    page = (await http.get("/api/jobs?limit=200&status=succeeded", headers=headers)).json()
                    now = time.perf_counter()
                    for job in page["items"]:
                        done.setdefault(job["id"], now)
                    offset = 200
                    while offset < page["total"]:
                        more = (
                            await http.get(
                                f"/api/jobs?limit=200&offset={offset}&status=succeeded", headers=headers
                            )
                        ).json()
                        for job in more["items"]:
                            done.setdefault(job["id"], now)
                        offset += 200
                    await asyncio.sleep(0.02)
                elapsed = time.perf_counter() - started
                latencies = [(done[j] - t0) * 1000 for j, t0 in submitted.items()]
        print(f"\nJobs through the API (SQLite, in-process worker, {count} sequential submits, then drain)")
        print(f"{'metric':<34} {'value':>10}")
        print(f"{'submit p50 ms':<34} {statistics.median(submit_ms):>10.1f}")
        print(f"{'submit p95 ms':<34} {percentile(submit_ms, 0.95):>10.1f}")
        print(f"{'submit → succeeded p50 ms':<34} {statistics.median(latencies):>10.1f}")
        print(f"{'completed jobs/s':<34} {count / elapsed:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    cache = ROOT / "var" / "models"
    image = chelsea_jpeg()
    bench_predictor(cache, image)
    asyncio.run(bench_jobs(cache, image, args.jobs))


if __name__ == "__main__":
    main()
