"""Nearest-neighbour search over L2-normalised embeddings.

Predictors search through the small :class:`VectorIndex` protocol so that a database-backed index
(e.g. pgvector, once the PostgreSQL it runs on has the extension) can replace the exact NumPy one
without touching the model code. Only :class:`NumpyCosineIndex` exists today: pgvector is not
available on the deployment's PostgreSQL, and for catalogs of a few thousand rows an exact search
in memory costs well under a millisecond anyway.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class VectorIndex(Protocol):
    """Cosine search over a fixed set of L2-normalised vectors."""

    @property
    def size(self) -> int:
        """How many vectors the index holds."""
        ...

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The ``k`` best matches of each query row, best first.

        ``queries`` is ``(m, dim)`` and L2-normalised. Returns ``(scores, indices)``, both
        ``(m, min(k, size))``: cosine similarities and row numbers of the indexed vectors. Equal
        scores are ordered by row number, so a result never depends on how the search was batched.
        """
        ...


class NumpyCosineIndex:
    """Exact cosine search: one matrix product, then ``argpartition`` for the top k.

    The product is an ``einsum`` (NumPy's own single-threaded loop) rather than ``@`` (BLAS). With
    OpenBLAS, ``@`` is as fast for one query, but it leaves OpenBLAS's threads spinning for a while
    afterwards, and they took the cores from the next model run: on a 2-core machine, batches of 4
    queries took twice as long. The einsum costs under a millisecond more for 16 queries.
    """

    def __init__(self, vectors: npt.NDArray[np.float32]) -> None:
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ValueError(f"Expected a non-empty (n, dim) matrix, got shape {vectors.shape}.")
        count = vectors.shape[0]
        # Stored as (dim, n): the einsum's inner loop then runs along contiguous memory.
        self._columns = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).T)
        # Tie-breaker in the low 32 bits of the ranking key: a lower row number ranks higher.
        self._row_rank = (count - 1 - np.arange(count, dtype=np.int64))[np.newaxis, :]

    @property
    def size(self) -> int:
        return int(self._columns.shape[1])

    @property
    def dim(self) -> int:
        return int(self._columns.shape[0])

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"Expected queries of shape (m, {self.dim}), got {queries.shape}.")
        if k < 1:
            raise ValueError("k must be at least 1.")
        k = min(k, self.size)
        scores: npt.NDArray[np.float32] = np.einsum(
            "md,dn->mn", np.asarray(queries, dtype=np.float32), self._columns
        )

        # argpartition alone picks arbitrarily among scores tied at the k-th place, and catalogs do
        # contain duplicate texts. Ranking on an exact integer key (score bits, then row number)
        # makes the selection and the order deterministic, without a full sort of every row.
        keys = _ranking_keys(scores, self._row_rank)
        if k < self.size:
            top = np.argpartition(keys, self.size - k, axis=1)[:, self.size - k :]
        else:
            top = np.broadcast_to(np.arange(self.size, dtype=np.int64), keys.shape)
        # Best first. Indexing with ``rows`` rather than take_along_axis saves Python-level steps,
        # which are most of the cost at this size. Keys are unique, so the order is fully defined.
        rows = np.arange(keys.shape[0])[:, np.newaxis]
        indices = top[rows, np.argsort(keys[rows, top], axis=1)[:, ::-1]].astype(np.int64, copy=False)
        return scores[rows, indices], indices


def _ranking_keys(scores: npt.NDArray[np.float32], row_rank: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """int64 keys ordered like ``scores``, ties broken by ``row_rank``: float bits high, rank low.

    Non-negative IEEE floats already order like their bit patterns read as integers; negative ones
    order backwards, so their magnitude bits are flipped. Done in place on one array because after
    a model run every NumPy call here is slowed by cold caches.
    """
    keys = np.ascontiguousarray(scores, dtype=np.float32).view(np.int32).astype(np.int64)
    keys ^= (keys >> 31) & 0x7FFFFFFF  # keys >> 31 is -1 for negative values, else 0
    keys <<= 32
    keys |= row_rank
    return keys
