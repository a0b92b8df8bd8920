"""The HF backend resolves a hub name through transformers' AutoTokenizer, offline, from a
local HF cache laid out the way ``huggingface-cli download`` leaves it; an uncached name
fails with the remedy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ctxmem.errors import TokenizerError
from ctxmem.tokens import get_tokenizer

TEXTS = [
    "def extend_attention(q, k, v):\n    return softmax(q @ k.T / sqrt(d)) @ v",
    "OutOfResources: shared memory, Required: 163840, Hardware limit: 101376",
    "数学 ünïcode — emoji 🚀 and tabs\tand  double  spaces",
    "",
]


@pytest.fixture
def hub_cache(tmp_path: Path, deepseek_tokenizer_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytest.importorskip("transformers", reason="hub names load through transformers (ctxmem[hf])")
    repo = tmp_path / "hub" / "models--acme--tiny-deepseek"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copy(deepseek_tokenizer_path, snap / "tokenizer.json")
    (snap / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    (snap / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # read at import
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hub_name_counts_like_the_tokenizer_file(hub_cache: Path, deepseek_tokenizer_path: Path) -> None:
    by_name = get_tokenizer("hf:acme/tiny-deepseek")
    by_file = get_tokenizer(f"hf:{deepseek_tokenizer_path}")
    assert by_name.exact
    assert [by_name.count(t) for t in TEXTS] == [by_file.count(t) for t in TEXTS]
    assert by_name.count_many(TEXTS * 2) == [by_file.count(t) for t in TEXTS * 2]
    assert by_name.count(TEXTS[1]) > 10


def test_uncached_hub_name_offline_names_the_remedy(hub_cache: Path) -> None:
    with pytest.raises(TokenizerError) as err:
        get_tokenizer("hf:acme/not-downloaded")
    msg = str(err.value)
    assert "acme/not-downloaded" in msg and "HF_HUB_OFFLINE=1" in msg
    assert "huggingface-cli download acme/not-downloaded" in msg and "tokenizer.json" in msg


def test_a_missing_local_path_says_so_not_how_to_download_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "tok"
    with pytest.raises(TokenizerError) as err:
        get_tokenizer(f"hf:{missing}")
    msg = str(err.value)
    assert f"'{missing}': nothing at that path" in msg and "huggingface-cli" not in msg and ".." not in msg
