"""tokenizer_for_model: every family maps to a loadable tokenizer and says honestly whether it is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ctxmem.tokens import get_tokenizer, tokenizer_for_model
from ctxmem.tokens.models import cached_tokenizer_json

CASES = [
    # Claude: its tokenizer is not public -> o200k, calibrated
    ("claude-sonnet-4-6", ("o200k_base", False)),
    ("anthropic:claude-opus-4-1", ("o200k_base", False)),
    ("anthropic.claude-3-5-sonnet-20240620-v1:0", ("o200k_base", False)),
    # OpenAI
    ("gpt-4o-mini", ("o200k_base", True)),
    ("openai:gpt-4.1-nano", ("o200k_base", True)),
    ("gpt-5", ("o200k_base", True)),
    ("o3-mini", ("o200k_base", True)),
    ("gpt-oss-120b", ("o200k_base", True)),
    ("ft:gpt-4o-mini:acme::abc123", ("o200k_base", True)),
    ("gpt-4", ("cl100k_base", True)),
    ("gpt-4-turbo", ("cl100k_base", True)),
    ("gpt-3.5-turbo-0125", ("cl100k_base", True)),
    # Qwen, including Qwen-Max through an Anthropic-compatible API and Ollama tags
    ("Qwen/Qwen3-8B", ("qwen3", True)),
    ("openai:qwen3:8b", ("qwen3", True)),
    ("anthropic:qwen-max", ("qwen3", True)),
    ("qwen2.5-coder-32b-instruct", ("qwen3", True)),
    ("qwq-32b", ("qwen3", True)),
    # Llama 3 (not 2, not 4)
    ("meta-llama/Llama-3.1-8B-Instruct", ("llama3", True)),
    ("ollama:llama3.2:3b", ("llama3", True)),
    ("llama-3.3-70b-versatile", ("llama3", True)),
    ("llama-2-7b-chat", ("o200k_base", False)),
    ("meta-llama/Llama-4-Scout-17B-16E", ("o200k_base", False)),
    ("llama-30b", ("o200k_base", False)),
    # others
    ("mistral-large-latest", ("o200k_base", False)),
    ("gemini-2.5-pro", ("o200k_base", False)),
    ("", ("o200k_base", False)),
]


@pytest.mark.parametrize(("model", "expected"), CASES)
def test_model_maps_to_its_tokenizer(model: str, expected: tuple[str, bool], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: nothing local
    assert tokenizer_for_model(model) == expected


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base", "qwen3", "llama3"])
def test_every_name_the_map_returns_loads_offline(name: str) -> None:
    tok = get_tokenizer(name)
    assert tok.exact and tok.count("def f(x):\n    return x + 1\n") > 0


def _fake_hf_cache(root: Path, repo: str, tokenizer_json: str) -> Path:
    model_dir = root / ("models--" + repo.replace("/", "--"))
    snap = model_dir / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (model_dir / "refs").mkdir()
    (model_dir / "refs" / "main").write_text("abc123")
    path = snap / "tokenizer.json"
    path.write_text(tokenizer_json)
    return path


def _tiny_tokenizer_json() -> str:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return str(tok.to_str())


def test_deepseek_uses_a_cached_tokenizer_json_and_never_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert tokenizer_for_model("deepseek-chat") == ("o200k_base", False)
    assert tokenizer_for_model("deepseek-ai/DeepSeek-V3") == ("o200k_base", False)
    path = _fake_hf_cache(tmp_path, "deepseek-ai/DeepSeek-V3", _tiny_tokenizer_json())
    assert cached_tokenizer_json("deepseek-ai/DeepSeek-V3") == path
    for model in ("deepseek-chat", "deepseek-reasoner", "deepseek-ai/DeepSeek-V3"):
        name, exact = tokenizer_for_model(model)
        assert (name, exact) == (f"hf:{path}", True)
    tok = get_tokenizer(f"hf:{path}")
    assert tok.count("hello world") == 2


def test_a_local_model_folder_with_a_tokenizer_json_counts_with_it(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(_tiny_tokenizer_json())
    (folder / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    assert tokenizer_for_model(f"local:{folder}") == (f"hf:{folder / 'tokenizer.json'}", True)
    assert tokenizer_for_model(f"local:{tmp_path / 'absent'}") == ("o200k_base", False)


def test_without_quicktok_qwen_and_llama_fall_back_honestly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ctxmem.tokens.models as models

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_quicktok_available", lambda: False)
    assert tokenizer_for_model("qwen3-8b") == ("o200k_base", False)
    assert tokenizer_for_model("llama3.1:8b") == ("o200k_base", False)
    path = _fake_hf_cache(tmp_path, "Qwen/Qwen3-8B", _tiny_tokenizer_json())
    assert tokenizer_for_model("Qwen/Qwen3-8B") == (f"hf:{path}", True)


def test_get_tokenizer_resolves_exact_model_names_and_refuses_stand_ins() -> None:
    from ctxmem.errors import UnknownNameError

    assert get_tokenizer("gpt-4o").name == "o200k_base"
    assert get_tokenizer("gpt-oss-20b").name == "o200k_base"  # tiktoken's own table says o200k_harmony
    assert get_tokenizer("Qwen/Qwen3-8B").name == "qwen3"
    assert get_tokenizer("llama3.1:8b").name == "llama3"
    with pytest.raises(UnknownNameError, match="Claude's tokenizer is not public"):
        get_tokenizer("claude-sonnet-4-6")
    with pytest.raises(UnknownNameError, match="Did you mean 'o200k_base'"):
        get_tokenizer("o200k_bse")
