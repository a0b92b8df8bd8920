from __future__ import annotations

import builtins
import importlib
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from ctxmem.errors import InputError, MissingDependencyError
from ctxmem.retrieval import ExactIndex, FaissIndex, VectorIndex, make_index


def unit(rng: np.random.Generator, n: int, d: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, d)).astype(np.float32)
    out: npt.NDArray[np.float32] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clustered(rng: np.random.Generator, n: int, d: int, clusters: int) -> npt.NDArray[np.float32]:
    centers = unit(rng, clusters, d)
    x = centers[rng.integers(0, clusters, n)] + 0.15 * rng.standard_normal((n, d)).astype(np.float32)
    out: npt.NDArray[np.float32] = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return out


def brute(x: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], q: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    s = q @ x.T
    return np.stack([ids[np.lexsort((ids, -row))[:k]] for row in s])


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_exact_search_matches_brute_force_with_arbitrary_ids(kind: str) -> None:
    rng = np.random.default_rng(0)
    x = unit(rng, 500, 32)
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    index = make_index(32, kind)  # type: ignore[arg-type]
    assert isinstance(index, VectorIndex)
    index.add(ids[:200], x[:200])
    index.add(ids[200:], x[200:])  # incremental adds
    assert len(index) == 500
    q = unit(rng, 20, 32)
    scores, got = index.search(q, 10)
    assert got.shape == (20, 10) and scores.dtype == np.float32
    np.testing.assert_array_equal(got, brute(x, ids, q, 10))
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_ties_are_ordered_by_id_and_short_results_padded(kind: str) -> None:
    index = make_index(4, kind)  # type: ignore[arg-type]
    v = np.array([[1, 0, 0, 0]], dtype=np.float32)
    index.add([7, 3, 5], np.repeat(v, 3, axis=0))
    scores, ids = index.search(v, 5)
    assert ids[0].tolist() == [3, 5, 7, -1, -1]
    assert np.isneginf(scores[0, 3:]).all()
    with pytest.raises(InputError):
        index.add([1], np.zeros((1, 5), dtype=np.float32))


def test_hnsw_recall_against_exact_on_a_moderate_set() -> None:
    rng = np.random.default_rng(1)
    x = clustered(rng, 8000, 64, clusters=80)
    ids = np.arange(8000, dtype=np.int64)
    hnsw = FaissIndex(64, hnsw_threshold=0)
    hnsw.add(ids, x)
    assert hnsw.kind == "hnsw"
    exact = ExactIndex(64)
    exact.add(ids, x)
    q = clustered(rng, 100, 64, clusters=80)
    _, want = exact.search(q, 10)
    _, got = hnsw.search(q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), want.tolist(), strict=True)])
    assert recall >= 0.98


def test_faiss_index_switches_to_hnsw_past_the_threshold_keeping_ids() -> None:
    rng = np.random.default_rng(2)
    x = unit(rng, 300, 16)
    index = FaissIndex(16, hnsw_threshold=200)
    index.add(np.arange(1000, 1150), x[:150])
    assert index.kind == "flat"
    index.add(np.arange(1150, 1300), x[150:])
    assert index.kind == "hnsw" and len(index) == 300
    _, ids = index.search(x[[0, 299]], 1)  # each vector is its own nearest neighbour
    assert ids[:, 0].tolist() == [1000, 1299]


def _block_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "faiss", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    real_import_module = importlib.import_module

    def fake_import_module(name: str, package: str | None = None) -> Any:
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import_module(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import_module)


def test_missing_faiss_raises_missing_dependency_with_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _block_faiss(monkeypatch)
    with pytest.raises(MissingDependencyError, match=r'pip install "ctxmem\[faiss\]"') as info:
        FaissIndex(8)
    assert info.value.package == "faiss-cpu"
    assert isinstance(make_index(8, "auto"), ExactIndex)  # auto falls back to exact numpy search
    with pytest.raises(MissingDependencyError):
        make_index(8, "hnsw")
