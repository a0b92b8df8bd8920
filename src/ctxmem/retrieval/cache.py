"""Embedding caches: every chunk is embedded once per (content hash, embedder id).

:class:`CachedEmbedder` wraps any :class:`~ctxmem.retrieval.base.Embedder`. For a batch of
texts it hashes each (SHA-256 of the UTF-8 text, the store's :func:`content_hash`), reads
the cached vectors in one query, embeds only the missing texts (each distinct text once)
in one call to the inner embedder, writes them back in one transaction and returns the
rows in input order.

Two caches:

* :class:`SQLiteEmbeddingCache` — the ``embedding_cache`` table of a
  :class:`~ctxmem.store.SQLiteStore` file (created by migration ``m005_embedding_cache``):
  vectors as little-endian float32 bytes, shared by every session and process using the
  file, surviving restarts.
* :class:`MemoryEmbeddingCache` — a dict, for runs without a store.

The store exposes no public write hook, so :class:`SQLiteEmbeddingCache` runs its own
``BEGIN IMMEDIATE`` transactions on ``store.conn`` under the store's connection lock, and
retries while the file is busy — the same discipline as the store's own writes.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from ctxmem.errors import StoreBusyError, StoreError
from ctxmem.retrieval._deps import require_numpy
from ctxmem.retrieval.base import Embedder
from ctxmem.store.base import EmbeddingCacheProvider, content_hash

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ctxmem.store.sqlite import SQLiteStore

T = TypeVar("T")
_IN_CHUNK = 500


@runtime_checkable
class EmbeddingCache(Protocol):
    """Vectors by (embedder id, content hash)."""

    def get_many(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]: ...

    def put_many(self, embedder_id: str, vectors: Mapping[str, npt.NDArray[np.float32]]) -> None: ...

    def count(self, embedder_id: str | None = None) -> int: ...


class MemoryEmbeddingCache:
    """An in-process cache (lost when the process ends)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
        self._lock = threading.Lock()

    def get_many(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        with self._lock:
            return {h: v for h in hashes if (v := self._data.get((embedder_id, h))) is not None}

    def put_many(self, embedder_id: str, vectors: Mapping[str, npt.NDArray[np.float32]]) -> None:
        with self._lock:
            for h, v in vectors.items():
                self._data[(embedder_id, h)] = v

    def count(self, embedder_id: str | None = None) -> int:
        with self._lock:
            return sum(1 for e, _ in self._data if embedder_id is None or e == embedder_id)


class SQLiteEmbeddingCache:
    """The ``embedding_cache`` table of a :class:`~ctxmem.store.SQLiteStore` file."""

    def __init__(self, store: SQLiteStore, *, max_attempts: int = 40):
        self.store = store
        self.max_attempts = max_attempts
        # The store serializes use of its one connection with this lock; share it so a
        # cache write never interleaves with a store transaction from another thread.
        self._lock: Any = getattr(store, "_lock", None) or threading.RLock()
        rows = self._run(
            lambda c: c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'embedding_cache'").fetchall()
        )
        if not rows:
            raise StoreError(
                f"{store.path}: no embedding_cache table; this store was opened without migration "
                "m005_embedding_cache (reopen it with this version of ctxmem)"
            )

    def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        delay = 0.002
        for attempt in range(1, self.max_attempts + 1):
            try:
                with self._lock:
                    conn = self.store.conn
                    if not write:
                        return fn(conn)
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        result = fn(conn)
                        conn.execute("COMMIT")
                        return result
                    except BaseException:
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                        raise
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if "locked" not in msg and "busy" not in msg:
                    raise StoreError(f"{self.store.path}: {exc}") from exc
                if attempt == self.max_attempts:
                    raise StoreBusyError(self.store.path, attempt) from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)
        raise StoreBusyError(self.store.path, self.max_attempts)  # pragma: no cover

    def get_many(self, embedder_id: str, hashes: Sequence[str]) -> dict[str, npt.NDArray[np.float32]]:
        np_ = require_numpy()
        uniq = list(dict.fromkeys(hashes))
        out: dict[str, npt.NDArray[np.float32]] = {}
        for i in range(0, len(uniq), _IN_CHUNK):
            chunk = uniq[i : i + _IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT hash, dim, vector FROM embedding_cache WHERE embedder = ? AND hash IN ({marks})"
            params = (embedder_id, *chunk)

            def read(c: sqlite3.Connection, sql: str = sql, params: tuple[str, ...] = params) -> list[Any]:
                return c.execute(sql, params).fetchall()

            rows = self._run(read)
            for h, dim, blob in rows:
                vec = np_.frombuffer(blob, dtype="<f4")
                if vec.shape[0] == dim:  # a torn or foreign row is recomputed, not trusted
                    out[h] = vec.astype(np_.float32, copy=False)
        return out

    def put_many(self, embedder_id: str, vectors: Mapping[str, npt.NDArray[np.float32]]) -> None:
        if not vectors:
            return
        rows = [(h, embedder_id, int(v.shape[0]), v.astype("<f4").tobytes()) for h, v in vectors.items()]
        self._run(
            lambda c: c.executemany(
                "INSERT OR IGNORE INTO embedding_cache (hash, embedder, dim, vector) VALUES (?, ?, ?, ?)", rows
            ),
            write=True,
        )

    def count(self, embedder_id: str | None = None) -> int:
        if embedder_id is None:
            rows = self._run(lambda c: c.execute("SELECT count(*) FROM embedding_cache").fetchall())
        else:
            rows = self._run(
                lambda c: c.execute("SELECT count(*) FROM embedding_cache WHERE embedder = ?", (embedder_id,)).fetchall()
            )
        return int(rows[0][0])


def open_cache(cache: EmbeddingCache | EmbeddingCacheProvider | None) -> EmbeddingCache:
    """A cache from a cache, a store with the
    :class:`~ctxmem.store.base.EmbeddingCacheProvider` capability (its own table: the SQLite
    file, the PostgreSQL database) or ``None`` (memory)."""
    if cache is None:
        return MemoryEmbeddingCache()
    if isinstance(cache, EmbeddingCacheProvider):
        provided: EmbeddingCache = cache.embedding_cache()
        return provided
    return cache


class CachedEmbedder:
    """An :class:`~ctxmem.retrieval.base.Embedder` that embeds each distinct text once.

    ``computed`` counts the texts the inner embedder was asked for; ``hits`` the texts
    served from the cache (statistics for reports and tests).
    """

    def __init__(self, inner: Embedder, cache: EmbeddingCache | EmbeddingCacheProvider | None = None):
        self.inner = inner
        self.cache = open_cache(cache)
        self.computed = 0
        self.hits = 0

    @property
    def id(self) -> str:
        return self.inner.id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        np_ = require_numpy()
        out = np_.zeros((len(texts), self.dim), dtype=np_.float32)
        if not texts:
            return out
        eid = self.inner.id
        hashes = [content_hash(t) for t in texts]
        found = self.cache.get_many(eid, hashes)
        missing: dict[str, str] = {}
        for h, t in zip(hashes, texts, strict=True):
            if h not in found and h not in missing:
                missing[h] = t
        if missing:
            vecs = self.inner.embed(list(missing.values()))
            if vecs.shape != (len(missing), self.dim):
                raise ValueError(
                    f"embedder {eid!r} returned shape {vecs.shape}, expected {(len(missing), self.dim)}"
                )
            new = {h: np_.ascontiguousarray(vecs[i], dtype=np_.float32) for i, h in enumerate(missing)}
            self.cache.put_many(eid, new)
            found.update(new)
            self.computed += len(missing)
        self.hits += len(texts) - len(missing)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return out

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, {type(self.cache).__name__})"
