from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from ctxmem.errors import ConfigError, UnknownNameError
from ctxmem.retrieval import EMBEDDERS, Embedder, HashingEmbedder, get_embedder


def test_hashing_is_deterministic_normalized_float32() -> None:
    texts = ["OutOfResources: shared memory, Required: 147456", "", "BLOCK_M=64 BLOCK_N=32 warps=4", "x"]
    a = HashingEmbedder().embed(texts)
    b = HashingEmbedder().embed(texts)
    assert a.dtype == np.float32 and a.shape == (4, 1024)
    assert np.array_equal(a, b)
    norms = np.linalg.norm(a, axis=1)
    assert norms[1] == 0.0  # an empty text has no features
    np.testing.assert_allclose(norms[[0, 2, 3]], 1.0, atol=1e-6)


def test_hashing_does_not_depend_on_python_hash_seed() -> None:
    code = (
        "from ctxmem.retrieval import HashingEmbedder;"
        "print(HashingEmbedder(64).embed(['tile spill register pressure'])[0].round(6).tolist())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_hashing_similarity_follows_shared_vocabulary() -> None:
    e = HashingEmbedder()
    q, near, far = e.embed(["shared memory limit exceeded", "out of shared memory: hardware limit 101376", "git log of commits"])
    assert float(q @ near) > float(q @ far)
    # identifiers split at underscores: BLOCK_M shares features with "block"
    ident, word, other = e.embed(["BLOCK_M", "block size", "warp"])
    assert float(ident @ word) > float(ident @ other)


def test_hashing_id_names_every_setting() -> None:
    assert HashingEmbedder(512).id != HashingEmbedder(1024).id
    assert HashingEmbedder(char_ngrams=(2, 4)).id != HashingEmbedder().id
    with pytest.raises(ConfigError, match="dim"):
        HashingEmbedder(4)


def test_registry_builds_embedders_and_suggests_names() -> None:
    assert {"hashing", "minilm"} <= set(EMBEDDERS.names())
    e = get_embedder("hashing", dim=128)
    assert isinstance(e, Embedder) and e.dim == 128
    with pytest.raises(UnknownNameError, match="Did you mean 'hashing'"):
        get_embedder("hashng")


def test_importing_retrieval_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, ctxmem, ctxmem.retrieval;"
        "print(sorted(m for m in ('numpy', 'faiss', 'torch', 'sentence_transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
