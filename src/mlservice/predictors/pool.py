"""Loaded predictors of one process: each loaded once, on first use or at start."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import anyio

from mlservice.predictors.base import Predictor
from mlservice.predictors.vector_index import SearchesVectors, VectorIndexFactory

log = logging.getLogger(__name__)


class PredictorPool:
    def __init__(
        self,
        predictors: Mapping[str, type[Predictor]],
        cache_dir: Path,
        *,
        vector_index: VectorIndexFactory | None = None,
    ) -> None:
        self.classes = dict(predictors)
        self.cache_dir = cache_dir
        # None leaves predictors that search vectors with their own default (exact, in memory).
        self.vector_index = vector_index
        self._loaded: dict[str, Predictor] = {}
        self._locks: dict[str, asyncio.Lock] = {slug: asyncio.Lock() for slug in self.classes}
        # One inference at a time per model: onnxruntime already spreads one run over the cores,
        # and two runs at once would only fight for them.
        self.limiters: dict[str, anyio.CapacityLimiter] = {
            slug: anyio.CapacityLimiter(1) for slug in self.classes
        }

    async def get(self, slug: str) -> Predictor:
        if slug in self._loaded:
            return self._loaded[slug]
        async with self._locks[slug]:
            if slug not in self._loaded:
                predictor = self.classes[slug](self.cache_dir)
                if self.vector_index is not None and isinstance(predictor, SearchesVectors):
                    predictor.vector_index = self.vector_index
                started = time.perf_counter()
                await anyio.to_thread.run_sync(predictor.load)
                log.info("loaded %s in %.0f ms", slug, (time.perf_counter() - started) * 1000)
                self._loaded[slug] = predictor
        return self._loaded[slug]

    def is_loaded(self, slug: str) -> bool:
        return slug in self._loaded
