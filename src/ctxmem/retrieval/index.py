"""Vector indexes: exact inner-product search (numpy) and FAISS (exact, then HNSW).

* :class:`ExactIndex` — brute force with numpy: one matrix product per query batch. Exact,
  dependency-light (numpy only), and fast enough up to some tens of thousands of chunks.
* :class:`FaissIndex` — ``faiss.IndexFlatIP`` (exact) while the index holds fewer than
  ``hnsw_threshold`` vectors; when an add crosses the threshold the vectors are moved into
  an ``IndexHNSWFlat`` graph (inner product) and later adds go to the graph. HNSW answers
  in well under a millisecond at 100K chunks where exact search takes tens. Defaults
  (M=16, efConstruction=100, efSearch=256) were chosen on a shared 2-core CPU: at
  100K×384 clustered vectors (``benchmarks/bench_retrieval.py``) efSearch 64/128 already
  reach recall@10 0.9997 at 0.16/0.32 ms per query, build 27 s; on a harder set (the
  recall test: 8K×64, noise larger than the cluster spread) efSearch 128 gives 0.961 and
  256 gives 0.998, while M=32/efConstruction=200 at efSearch 128 gives 0.989 for a 4×
  slower build. So: a cheap graph, searched wider.

Both keep caller ids in their own ``int64`` array (position → id), so any ids work and
the FAISS index never needs ``IndexIDMap``. Results are ordered by score, then ascending
id, so equal scores come back in a deterministic order. faiss is imported lazily, by the
first :class:`FaissIndex`; without it, that raises
:class:`~ctxmem.errors.MissingDependencyError` with the install line.

HNSW graphs built with several OpenMP threads are not bit-identical from run to run (the
insertion order interleaves); their answers are deterministic for a given graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from ctxmem.errors import ConfigError, InputError
from ctxmem.retrieval._deps import faiss_available, require_faiss, require_numpy

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ctxmem.retrieval.base import VectorIndex

IndexKind = Literal["auto", "exact", "faiss", "hnsw"]


def _as_matrix(vectors: Any, dim: int, what: str = "vectors") -> npt.NDArray[np.float32]:
    np_ = require_numpy()
    m = np_.ascontiguousarray(vectors, dtype=np_.float32)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[1] != dim:
        raise InputError(f"{what} must have shape (n, {dim}), got {tuple(m.shape)}", field=what)
    return m


def _as_ids(ids: Any, n: int) -> npt.NDArray[np.int64]:
    np_ = require_numpy()
    arr = np_.asarray(ids, dtype=np_.int64).reshape(-1)
    if arr.shape[0] != n:
        raise InputError(f"got {arr.shape[0]} ids for {n} vectors", field="ids")
    return arr


def _order_rows(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Sort each row by (-score, id), keep k, pad with (-inf, -1); -1 ids sort last."""
    np_ = require_numpy()
    nq = scores.shape[0]
    out_s = np_.full((nq, k), -np_.inf, dtype=np_.float32)
    out_i = np_.full((nq, k), -1, dtype=np_.int64)
    for r in range(nq):
        valid = ids[r] >= 0
        s, i = scores[r][valid], ids[r][valid]
        order = np_.lexsort((i, -s))[:k]
        out_s[r, : order.shape[0]] = s[order]
        out_i[r, : order.shape[0]] = i[order]
    return out_s, out_i


class ExactIndex:
    """Exact inner-product search with numpy (brute force)."""

    def __init__(self, dim: int):
        np_ = require_numpy()
        if dim < 1:
            raise ConfigError("must be at least 1", field="dim")
        self._dim = int(dim)
        self._n = 0
        self._vecs = np_.zeros((0, self._dim), dtype=np_.float32)
        self._ids = np_.zeros(0, dtype=np_.int64)

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return self._n

    def add(self, ids: Sequence[int] | npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        np_ = require_numpy()
        m = _as_matrix(vectors, self._dim)
        arr = _as_ids(ids, m.shape[0])
        need = self._n + m.shape[0]
        if need > self._vecs.shape[0]:  # amortized growth: adds stay O(new) on average
            cap = max(need, 2 * self._vecs.shape[0], 1024)
            grown = np_.zeros((cap, self._dim), dtype=np_.float32)
            grown[: self._n] = self._vecs[: self._n]
            ids_grown = np_.zeros(cap, dtype=np_.int64)
            ids_grown[: self._n] = self._ids[: self._n]
            self._vecs, self._ids = grown, ids_grown
        self._vecs[self._n : need] = m
        self._ids[self._n : need] = arr
        self._n = need

    def search(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        np_ = require_numpy()
        q = _as_matrix(vectors, self._dim, "queries")
        if k < 1:
            raise InputError("k must be at least 1", field="k")
        n = self._n
        if n == 0:
            return (np_.full((q.shape[0], k), -np_.inf, dtype=np_.float32), np_.full((q.shape[0], k), -1, dtype=np_.int64))
        scores = q @ self._vecs[:n].T
        kk = min(k, n)
        if kk < n:
            # Take a few extra candidates so ties at the k-th score are ordered by id.
            top = np_.argpartition(-scores, min(kk, n - 1), axis=1)[:, : min(n, kk + 1)]
        else:
            top = np_.broadcast_to(np_.arange(n), (q.shape[0], n))
        cand_s = np_.take_along_axis(scores, top, axis=1)
        cand_i = self._ids[top]
        return _order_rows(cand_s, cand_i, k)


class FaissIndex:
    """FAISS: exact ``IndexFlatIP`` below ``hnsw_threshold`` vectors, ``IndexHNSWFlat`` from it on."""

    def __init__(
        self,
        dim: int,
        *,
        hnsw_threshold: int = 20_000,
        m: int = 16,
        ef_construction: int = 100,
        ef_search: int = 256,
    ):
        self._faiss = require_faiss()
        np_ = require_numpy()
        if dim < 1:
            raise ConfigError("must be at least 1", field="dim")
        if hnsw_threshold < 0:
            raise ConfigError("must be >= 0", field="hnsw_threshold")
        if m < 4 or ef_construction < 8 or ef_search < 1:
            raise ConfigError("HNSW needs m >= 4, ef_construction >= 8, ef_search >= 1", field="m")
        self._dim = int(dim)
        self.hnsw_threshold = int(hnsw_threshold)
        self.m = int(m)
        self.ef_construction = int(ef_construction)
        self.ef_search = int(ef_search)
        self._index: Any = self._faiss.IndexFlatIP(self._dim)
        self._hnsw = False
        self._n = 0
        self._ids = np_.zeros(0, dtype=np_.int64)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"hnsw"``."""
        return "hnsw" if self._hnsw else "flat"

    def __len__(self) -> int:
        return self._n

    def _new_hnsw(self) -> Any:
        index = self._faiss.IndexHNSWFlat(self._dim, self.m, self._faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def add(self, ids: Sequence[int] | npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        np_ = require_numpy()
        m = _as_matrix(vectors, self._dim)
        arr = _as_ids(ids, m.shape[0])
        if m.shape[0] == 0:
            return
        if not self._hnsw and self._n + m.shape[0] >= self.hnsw_threshold:
            graph = self._new_hnsw()
            if self._n:
                graph.add(self._index.reconstruct_n(0, self._n))
            self._index, self._hnsw = graph, True
        self._index.add(m)
        if self._n + m.shape[0] > self._ids.shape[0]:
            grown = np_.zeros(max(self._n + m.shape[0], 2 * self._ids.shape[0], 1024), dtype=np_.int64)
            grown[: self._n] = self._ids[: self._n]
            self._ids = grown
        self._ids[self._n : self._n + m.shape[0]] = arr
        self._n += m.shape[0]

    def search(
        self, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        np_ = require_numpy()
        q = _as_matrix(vectors, self._dim, "queries")
        if k < 1:
            raise InputError("k must be at least 1", field="k")
        if self._n == 0:
            return (np_.full((q.shape[0], k), -np_.inf, dtype=np_.float32), np_.full((q.shape[0], k), -1, dtype=np_.int64))
        if self._hnsw:
            self._index.hnsw.efSearch = max(self.ef_search, k + 1)
        kk = min(self._n, k + 1)  # one extra so a tie at the k-th score is ordered by id
        scores, pos = self._index.search(q, kk)
        ids = np_.where(pos >= 0, self._ids[np_.clip(pos, 0, None)], -1)
        return _order_rows(scores, ids, k)


def make_index(dim: int, kind: IndexKind = "auto", **options: Any) -> VectorIndex:
    """An index by kind: ``exact`` (numpy), ``faiss`` (flat then HNSW), ``hnsw`` (always HNSW),
    or ``auto`` — ``faiss`` when faiss is installed, else ``exact``."""
    if kind == "exact":
        return ExactIndex(dim)
    if kind == "hnsw":
        return FaissIndex(dim, **{**options, "hnsw_threshold": 0})
    if kind == "faiss" or (kind == "auto" and faiss_available()):
        return FaissIndex(dim, **options)
    if kind == "auto":
        return ExactIndex(dim)
    raise ConfigError(f"unknown index kind {kind!r}; expected auto, exact, faiss or hnsw", field="index")
