"""Nearest-neighbour search over L2-normalised embeddings.

Predictors search through the small :class:`VectorIndex` protocol, so where the vectors live can
change without touching the model code. Both implementations search exactly and return the same
rows in the same order, ties by row number; their float32 scores differ by a few 1e-7, so only
rows whose scores are closer than that could come out in the other order.

* :class:`NumpyCosineIndex`: in memory. For catalogs of a few thousand rows it is also the faster
  one: for the 941 films on 2 cores, 0.07 ms for one query and 0.8 ms for 16, against 0.5 ms and
  4 ms in pgvector with the server on a local socket.
* :class:`PgVectorIndex`: in PostgreSQL with the pgvector extension, in a table of the
  configured database, shared by every process that uses that database.

:class:`VectorIndexFactory` picks one from the settings (``MLSERVICE_VECTOR_INDEX``): ``numpy``;
``pgvector``, which fails when the server lacks the extension; or ``auto`` (the default), which
uses pgvector when a PostgreSQL is configured and its server has the extension, otherwise NumPy.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    # psycopg is imported where it is used: it takes about 0.1 s, and most processes never need it.
    from psycopg import Connection

log = logging.getLogger(__name__)

VectorIndexKind = Literal["auto", "numpy", "pgvector"]


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
        k = _checked_k(queries, k, self.dim, self.size)
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


class VectorIndexUnavailable(RuntimeError):
    """pgvector cannot be used: no PostgreSQL configured, or the server lacks the extension."""


# Loading takes this transaction-level advisory lock, so that processes starting together load a
# table once, one after the other, and never create the extension or a table twice at once.
_LOAD_LOCK: Final = 0x6D6C_7376_6563  # "mlsvec"
_CATALOGS_TABLE: Final = "vector_index_catalogs"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

_T = TypeVar("_T")


class PgVectorIndex:
    """Exact cosine search in PostgreSQL with pgvector: ``ORDER BY embedding <=> query, id``.

    The index owns the table ``name`` (``id`` = row number, ``embedding vector(dim)``). Opening it
    loads the vectors unless the table already holds exactly these (their SHA-256 is kept in
    ``vector_index_catalogs``), so processes that share a database load a catalog once. The
    tables are a cache of the model files, not service data: they are created here rather than by
    the migrations, which must run on servers without the extension, and can be dropped any time.

    The search is exact (a scan of every row, 0.25 ms on the server for the 941 films), with no
    HNSW or IVFFlat index: an approximate index may miss true neighbours, and then the results
    would depend on which index a deployment uses. Scores are ``1 - (embedding <=> query)`` and
    agree with :class:`NumpyCosineIndex` to about 3e-7 (both sum in float32, in other orders, and
    pgvector also divides by the norms, 1 to within rounding); ties are ordered by row number.

    Every search checks, in the same statement, that the table still holds this index's vectors:
    a process serving another catalog (during an upgrade) may have replaced them. If so, they are
    loaded again and the search repeated, so a search never answers from another catalog.

    One connection, used under a lock since ``predict_batch`` runs in worker threads. When it
    breaks (server restart, idle timeout), the statement is retried once on a new connection.
    """

    def __init__(
        self, url: str, name: str, vectors: npt.NDArray[np.float32], *, connect_timeout: int = 10
    ) -> None:
        if _TABLE_NAME.fullmatch(name) is None or name == _CATALOGS_TABLE:
            raise ValueError(f"{name!r} cannot name a vector table (lower-case letters, digits, _).")
        if vectors.ndim != 2 or vectors.shape[0] == 0:
            raise ValueError(f"Expected a non-empty (n, dim) matrix, got shape {vectors.shape}.")
        self._url = url
        self._name = name
        self._connect_timeout = connect_timeout
        # Kept to load the table again if another process replaces it (1.4 MB for the films).
        self._vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        shape = f"{self._vectors.shape[0]}x{self._vectors.shape[1]}:".encode()
        self._sha256 = hashlib.sha256(shape + self._vectors.tobytes()).hexdigest()
        self._lock = threading.Lock()
        self._connection: Connection[tuple[Any, ...]] | None = None
        try:
            self._run(self._load)
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        k = _checked_k(queries, k, self.dim, self.size)
        queries = np.asarray(queries, dtype=np.float32)
        rows = self._run(lambda connection: self._search(connection, queries, k))
        if len(rows) != queries.shape[0] * k:
            log.warning("vector table %s holds other vectors; loading it again", self._name)
            rows = self._run(lambda connection: self._load_and_search(connection, queries, k))
            if len(rows) != queries.shape[0] * k:
                raise RuntimeError(f"vector table {self._name} keeps changing; another process is loading it")
        ids = np.array([row[0] for row in rows], dtype=np.int64).reshape(queries.shape[0], k)
        distances = np.array([row[1] for row in rows], dtype=np.float64).reshape(queries.shape[0], k)
        return (1.0 - distances).astype(np.float32), ids

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    # -- database ------------------------------------------------------------------------------

    def _run(self, work: Callable[[Connection[tuple[Any, ...]]], _T]) -> _T:
        import psycopg

        with self._lock:
            connection = self._connect()
            try:
                return work(connection)
            except psycopg.OperationalError:
                if not connection.broken:
                    raise
                log.warning(
                    "the connection to PostgreSQL for vector table %s broke; reconnecting", self._name
                )
                connection.close()
                self._connection = None
            return work(self._connect())

    def _connect(self) -> Connection[tuple[Any, ...]]:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        import psycopg
        from pgvector.psycopg import register_vector

        connection = psycopg.connect(
            self._url,
            autocommit=True,
            connect_timeout=self._connect_timeout,
            application_name="mlservice vector index",
        )
        try:
            _create_extension(connection)
            register_vector(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _load(self, connection: Connection[tuple[Any, ...]]) -> None:
        from psycopg import sql

        table, catalogs = sql.Identifier(self._name), sql.Identifier(_CATALOGS_TABLE)
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOAD_LOCK,))
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, sha256 text NOT NULL,"
                    " size integer NOT NULL, dim integer NOT NULL, loaded_at timestamptz NOT NULL)"
                ).format(catalogs)
            )
            stored = connection.execute(
                sql.SQL("SELECT sha256 FROM {} WHERE name = %s").format(catalogs), (self._name,)
            ).fetchone()
            if stored is not None and stored[0] == self._sha256:
                log.info("vector table %s already holds these %d vectors", self._name, self.size)
                return
            # Dropped and created rather than emptied: the dimension may have changed.
            connection.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            connection.execute(
                sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, embedding vector({}) NOT NULL)").format(
                    table, sql.Literal(self.dim)
                )
            )
            with connection.cursor() as cursor:
                copy_sql = sql.SQL("COPY {} (id, embedding) FROM STDIN WITH (FORMAT BINARY)").format(table)
                with cursor.copy(copy_sql) as copy:
                    copy.set_types(["int4", "vector"])
                    for row_number, vector in enumerate(self._vectors):
                        copy.write_row((row_number, vector))
            connection.execute(
                sql.SQL(
                    "INSERT INTO {} (name, sha256, size, dim, loaded_at) VALUES (%s, %s, %s, %s, now())"
                    " ON CONFLICT (name) DO UPDATE SET sha256 = excluded.sha256, size = excluded.size,"
                    " dim = excluded.dim, loaded_at = excluded.loaded_at"
                ).format(catalogs),
                (self._name, self._sha256, self.size, self.dim),
            )
        log.info("loaded %d vectors into vector table %s", self.size, self._name)

    def _load_and_search(
        self, connection: Connection[tuple[Any, ...]], queries: npt.NDArray[np.float32], k: int
    ) -> list[tuple[Any, ...]]:
        self._load(connection)
        return self._search(connection, queries, k)

    def _search(
        self, connection: Connection[tuple[Any, ...]], queries: npt.NDArray[np.float32], k: int
    ) -> list[tuple[Any, ...]]:
        from psycopg import sql

        # One statement per query, all sent in one pipeline (one round trip): twice as fast as
        # one statement over unnest(queries) with a lateral join. The EXISTS is evaluated once per
        # statement; a query without rows means the table holds another catalog's vectors.
        statement = sql.SQL(
            "SELECT id, embedding <=> %(query)s AS distance FROM {table}"
            " WHERE EXISTS (SELECT FROM {catalogs} WHERE name = %(name)s AND sha256 = %(sha256)s)"
            " ORDER BY embedding <=> %(query)s, id LIMIT %(k)s"
        ).format(table=sql.Identifier(self._name), catalogs=sql.Identifier(_CATALOGS_TABLE))
        params = [{"query": query, "k": k, "name": self._name, "sha256": self._sha256} for query in queries]
        rows: list[tuple[Any, ...]] = []
        with connection.cursor() as cursor:
            cursor.executemany(statement, params, returning=True)
            while True:
                rows.extend(cursor.fetchall())
                if not cursor.nextset():
                    break
        return rows


def _create_extension(connection: Connection[tuple[Any, ...]]) -> None:
    """``CREATE EXTENSION vector`` unless it exists; :class:`VectorIndexUnavailable` if it cannot."""
    import psycopg

    if connection.execute("SELECT FROM pg_extension WHERE extname = 'vector'").fetchone() is not None:
        return
    where = f"{connection.info.host}:{connection.info.port}/{connection.info.dbname}"
    if connection.execute("SELECT FROM pg_available_extensions WHERE name = 'vector'").fetchone() is None:
        raise VectorIndexUnavailable(f"the PostgreSQL server of {where} has no pgvector extension (vector)")
    try:
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_LOAD_LOCK,))
            connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.errors.InsufficientPrivilege as exc:
        raise VectorIndexUnavailable(
            f"creating the vector extension in {where} needs more privileges: {exc}"
        ) from exc
    log.info("created the vector extension in %s", where)


@dataclass(frozen=True)
class VectorIndexFactory:
    """Which :class:`VectorIndex` a predictor builds in ``load`` (``MLSERVICE_VECTOR_INDEX``).

    ``kind``: ``numpy``; ``pgvector`` (:class:`VectorIndexUnavailable` or the driver's error when
    it cannot be used); ``auto``: pgvector when ``url`` is set and its server has the extension,
    otherwise NumPy. Either way the choice is logged. ``url`` is a libpq URL (``postgresql://``).
    """

    kind: VectorIndexKind = "numpy"
    url: str = ""

    def open(self, name: str, vectors: npt.NDArray[np.float32]) -> VectorIndex:
        """An index over ``vectors``; ``name`` names its table when it lives in PostgreSQL."""
        if self.kind == "numpy":
            reason = "MLSERVICE_VECTOR_INDEX=numpy"
        elif not self.url:
            if self.kind == "pgvector":
                raise VectorIndexUnavailable(
                    "MLSERVICE_VECTOR_INDEX=pgvector needs PostgreSQL: set MLSERVICE_VECTOR_INDEX_URL"
                    " or a postgresql MLSERVICE_DATABASE_URL"
                )
            reason = "no PostgreSQL configured"
        else:
            import psycopg

            try:
                index = PgVectorIndex(self.url, name, vectors)
            except (VectorIndexUnavailable, psycopg.Error) as exc:
                if self.kind == "pgvector":
                    raise
                reason = f"pgvector unavailable: {exc}"
            else:
                log.info(
                    "vector index %s: exact pgvector search in PostgreSQL (%d vectors)", name, index.size
                )
                return index
        log.info("vector index %s: exact NumPy search in memory (%s)", name, reason)
        return NumpyCosineIndex(vectors)


@runtime_checkable
class SearchesVectors(Protocol):
    """A predictor that builds a vector index in ``load``; the pool hands it the configured factory."""

    vector_index: VectorIndexFactory


def _checked_k(queries: npt.NDArray[np.float32], k: int, dim: int, size: int) -> int:
    """``k`` capped at ``size``, after checking the arguments of :meth:`VectorIndex.search`."""
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise ValueError(f"Expected queries of shape (m, {dim}), got {queries.shape}.")
    if k < 1:
        raise ValueError("k must be at least 1.")
    return min(k, size)
