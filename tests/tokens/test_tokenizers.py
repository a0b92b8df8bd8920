"""Tokenizer backends against their reference libraries; the heuristic; budgets; calibration."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxmem.errors import ConfigError, TokenizerError, UnknownNameError
from ctxmem.messages import Message, ToolUseBlock, message_texts
from ctxmem.samples import synthetic_session
from ctxmem.tokens import (
    Budget,
    Calibration,
    Count,
    EncodingTokenizer,
    Tokenizer,
    count_messages,
    count_request,
    count_tools,
    get_tokenizer,
    tokenizer_id,
)
from generators import log_text, texts
from support import REPO_ROOT, tiktoken_encoding_or_skip

PROSE = (
    "Agents now run for hours against models with million-token windows. A window that large "
    "does not solve memory: re-sending the whole history every turn costs quadratic tokens, and "
    "models degrade long before their advertised length. Überraschend? Nicht wirklich — 注意力有限。"
)
SAMPLES = [
    "",
    "a",
    PROSE,
    (REPO_ROOT / "src" / "ctxmem" / "messages.py").read_text(),
    log_text(3, 400),
    '{"path": "kernel.py", "old": "x", "new": "y", "n": [1, 2.5, null]}',
    "special-looking text: <|endoftext|> <|im_start|>user<|im_end|>",
    "emoji 🚀🔥 and CJK 中文字符 and accents éàü",
    "    indented\n\n\n\ttabs\r\nwindows line",
    "1234567890 3.14159 0x7fffffff 1e-3 -42",
]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_tiktoken_counts_equal_tiktoken(name: str) -> None:
    enc = tiktoken_encoding_or_skip(name)
    tok = get_tokenizer(name)
    assert isinstance(tok, Tokenizer) and isinstance(tok, EncodingTokenizer)
    assert tok.exact and tok.id == f"tiktoken:{name}" and tok.id == tokenizer_id(name)
    for text in SAMPLES:
        assert tok.count(text) == len(enc.encode_ordinary(text))
        assert tok.encode(text) == enc.encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text
    plain = [t for t in SAMPLES if "<|" not in t]
    assert [tok.count(t) for t in plain] == [len(enc.encode(t)) for t in plain]
    assert tok.count_many(SAMPLES) == [tok.count(t) for t in SAMPLES]


@given(text=texts(max_size=300))
def test_o200k_count_equals_tiktoken_on_any_text(text: str) -> None:
    enc = tiktoken_encoding_or_skip("o200k_base")
    assert get_tokenizer("o200k_base").count(text) == len(enc.encode_ordinary(text))


def test_model_names_resolve_to_their_encoding(o200k: Any) -> None:
    assert get_tokenizer("gpt-4o").id == "tiktoken:o200k_base"
    assert tokenizer_id("gpt-4o") == "tiktoken:o200k_base"


def test_unknown_tokenizer_name_says_did_you_mean() -> None:
    with pytest.raises(UnknownNameError) as exc:
        get_tokenizer("o200k_bse")
    assert isinstance(exc.value, ConfigError)
    assert "Did you mean 'o200k_base'" in str(exc.value)
    assert "heuristic" in exc.value.known
    with pytest.raises(UnknownNameError) as exc:
        get_tokenizer("zzzz-not-a-tokenizer")
    assert "Did you mean" not in str(exc.value) and "o200k_base" in str(exc.value)


def test_missing_tiktoken_file_offline_names_the_remedy(tmp_path: Path) -> None:
    """Offline, with an empty tiktoken cache: the default ``o200k_base`` counts exactly through
    quicktok; the tiktoken engine (forced with ``tiktoken:``) loads o200k_base from a file
    rebuilt from quicktok's vocabulary, byte for byte OpenAI's; an encoding quicktok does not
    bundle (p50k_base) cannot be had and the error says what to provide."""
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env["TIKTOKEN_CACHE_DIR"] = str(empty)
    # No network: an unroutable proxy makes the download fail fast even where DNS works.
    env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    code = (
        "from ctxmem.errors import TokenizerError\n"
        "from ctxmem.tokens import get_tokenizer\n"
        "t = get_tokenizer('o200k_base')\n"
        "print(type(t).__name__, t.id, t.count('hello world'))\n"
        "r = get_tokenizer('tiktoken:o200k_base')\n"
        "print(type(r).__name__, r.id, r.count('hello world'), r.encode('naïve café 🚀') == t.encode('naïve café 🚀'))\n"
        "try:\n    get_tokenizer('p50k_base')\nexcept TokenizerError as e:\n    print('ERR', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    first, second, msg = r.stdout.split("\n", 2)
    assert first == "QuicktokTokenizer tiktoken:o200k_base 2"
    assert second == "TiktokenTokenizer tiktoken:o200k_base 2 True"
    o200k = hashlib.sha1(b"https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken").hexdigest()
    assert [p.name for p in empty.iterdir()] == [o200k]  # written once, under tiktoken's own name
    assert hashlib.sha256((empty / o200k).read_bytes()).hexdigest() == (
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d")  # tiktoken's expected_hash
    assert msg.startswith("ERR ")
    assert "p50k_base" in msg and "TIKTOKEN_CACHE_DIR" in msg and str(empty) in msg
    p50k = hashlib.sha1(b"https://openaipublic.blob.core.windows.net/encodings/p50k_base.tiktoken").hexdigest()
    assert p50k in msg  # the exact cache file name to provide


# --------------------------------------------------------------------------- Hugging Face


def test_hf_tokenizer_json_equals_the_tokenizers_library(deepseek_tokenizer_path: Path) -> None:
    from tokenizers import Tokenizer as FastTokenizer

    ref = FastTokenizer.from_file(str(deepseek_tokenizer_path))
    tok = get_tokenizer(f"hf:{deepseek_tokenizer_path}")
    assert tok.exact and tok.id.startswith("hf:")
    for text in SAMPLES:
        assert tok.count(text) == len(ref.encode(text, add_special_tokens=False).ids)
        assert tok.encode(text) == ref.encode(text, add_special_tokens=False).ids
    assert tok.count_many(SAMPLES) == [tok.count(t) for t in SAMPLES]  # batched path (>= 4 texts)
    assert tok.count_many(SAMPLES[:2]) == [tok.count(t) for t in SAMPLES[:2]]
    # the same file under another path shares the id (and so the memoized counts)
    assert get_tokenizer(f"hf:{deepseek_tokenizer_path.parent}/../tokenizers/deepseek_tokenizer.json").id == tok.id


def test_hf_bad_file_is_a_tokenizer_error(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError) as exc:
        get_tokenizer(f"hf:{bad}")
    assert str(bad) in str(exc.value)


# --------------------------------------------------------------------------- heuristic


def _corpora() -> list[str]:
    session = [t for m in synthetic_session(400, seed=9) for t in message_texts(m)]
    code = [p.read_text() for p in sorted((REPO_ROOT / "src" / "ctxmem").rglob("*.py"))[:30]]
    return [*session, *SAMPLES, *code, *(log_text(i, 300) for i in range(10)), PROSE * 20]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_heuristic_over_counts_every_text(name: str) -> None:
    tiktoken_encoding_or_skip(name)
    exact = get_tokenizer(name)
    heur = get_tokenizer("heuristic")
    assert not heur.exact
    corpus = _corpora()
    h, e = heur.count_many(corpus), exact.count_many(corpus)
    under = [(t[:60], a, b) for t, a, b in zip(corpus, h, e, strict=True) if a < b]
    assert under == []
    assert sum(h) > sum(e)


@given(text=texts(max_size=300))
def test_heuristic_is_zero_only_for_empty_text(text: str) -> None:
    n = get_tokenizer("heuristic").count(text)
    assert (n == 0) == (text == "")


# --------------------------------------------------------------------------- counting


def test_count_messages_request_and_tools() -> None:
    tok = get_tokenizer("heuristic")
    msgs = [Message.user("hello world"), Message.assistant("ok", ToolUseBlock("t", "grep", {"p": "x"}))]
    counts = count_messages(msgs, tok)
    assert counts[0].content == tok.count("hello world")
    assert counts[1].content == sum(tok.count_many(["ok", "grep", '{"p":"x"}']))
    assert all(c.overhead > 0 for c in counts)
    tools = [{"name": "grep", "input_schema": {"type": "object"}}]
    tc = count_tools(tools, tok)
    assert tc.content > 0 and tc.overhead > 0
    req = count_request(msgs, tok, system="be brief", tools=tools)
    assert req.content == sum(c.content for c in counts) + tc.content + tok.count("be brief")
    assert req.total > sum(c.total for c in counts) + tc.total
    assert Count(1, 2) + Count(3, 4) == Count(4, 6)
    assert count_messages([], tok) == []


# --------------------------------------------------------------------------- budget, calibration


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"context_window": 0}, "context_window"),
        ({"context_window": -5}, "context_window"),
        ({"context_window": 100, "reserve_output": 100}, "reserve_output"),
        ({"context_window": 100, "reserve_output": -1}, "reserve_output"),
        ({"context_window": 100, "threshold": 0}, "threshold"),
        ({"context_window": 100, "threshold": 1.5}, "threshold"),
    ],
)
def test_budget_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Budget(**kwargs)
    assert exc.value.field == field
    assert field in str(exc.value)


def test_budget_arithmetic() -> None:
    b = Budget(200_000, reserve_output=8_000, threshold=0.75)
    assert b.available == 192_000 and b.trigger == 144_000
    assert b.fits(192_000) and not b.fits(192_001)
    assert not b.should_compact(144_000) and b.should_compact(144_001)


@given(obs=st.lists(st.tuples(st.integers(-5, 10_000), st.integers(-5, 10_000)), max_size=80))
def test_calibration_factor_over_the_window(obs: list[tuple[int, int]]) -> None:
    cal = Calibration("m", "heuristic:v2", window=20)
    for e, r in obs:
        cal.observe(e, r)
    kept = [(e, r) for e, r in obs if e > 0 and r > 0][-20:]
    assert cal.observations == len(kept)
    if kept:
        ratio = sum(r for _, r in kept) / sum(e for e, _ in kept)
        assert cal.ratio == ratio
        low, high = cal.band
        # both directions inside the band; below 1 only once min_down observations agree
        expected = 1.0 if ratio < 1 and len(kept) < cal.min_down else min(high, max(low, ratio))
        assert cal.factor == expected
        assert cal.correct(1000) >= 1000 * cal.factor - 1e-6
    else:
        assert cal.factor == 1.0 and cal.correct(123) == 123
