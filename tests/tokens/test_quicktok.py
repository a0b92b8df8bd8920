"""quicktok against tiktoken (the reference), differentially, over arbitrary Unicode.

The differential tests run whenever both engines are installed and tiktoken's encoding
files can be loaded (they skip with that reason otherwise); the offline tests need
nothing but quicktok.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxmem.tokens import get_tokenizer, tokenizer_id
from ctxmem.tokens.quicktok_backend import QuicktokTokenizer
from support import tiktoken_only_or_skip

quicktok = pytest.importorskip("quicktok", reason="quicktok-v1 is not installed")

ENCODINGS = ["o200k_base", "cl100k_base"]

# Any code point, lone surrogates included (tiktoken replaces them with U+FFFD).
any_char = st.characters(codec=None, categories=None)
# Pieces that stress the pre-tokenizer: scripts, marks, digits, contractions, whitespace mixes.
pieces = st.sampled_from(
    [
        " ",
        "  ",
        "\n",
        "\r\n",
        "\t",
        " \n ",
        "'s",
        "'LL",
        "n't",
        "123",
        "4567",
        "٣٤",
        "Ⅻ",
        "é",
        "e\u0301",
        "中文",
        "日本語",
        "한국어",
        "Привет",
        "عربى",
        "🚀",
        "👩‍💻",
        "🇫🇷",
        "<|endoftext|>",
        "<|im_start|>",
        "//",
        "/*",
        "->",
        "...",
        "\u2028",
        "\u00a0",
        "\x00",
        "ABCdef",
        "camelCase",
        "HTTPServer",
    ]
)
unicode_text = st.lists(st.one_of(st.text(any_char, max_size=12), pieces), max_size=40).map("".join)


@pytest.mark.parametrize("name", ENCODINGS)
@given(text=unicode_text)
def test_quicktok_gives_tiktoken_ids_on_arbitrary_unicode(name: str, text: str) -> None:
    ref = tiktoken_only_or_skip(name)
    tok = get_tokenizer(name)
    assert isinstance(tok, QuicktokTokenizer)
    expected = ref.encode_ordinary(text)
    assert tok.encode(text) == expected
    assert tok.count(text) == len(expected)
    assert tok.count_many([text, text[::-1]]) == [len(expected), len(ref.encode_ordinary(text[::-1]))]


@pytest.mark.parametrize("name", ENCODINGS)
def test_quicktok_and_tiktoken_share_the_id_and_decode(name: str) -> None:
    ref = tiktoken_only_or_skip(name)
    fast, slow = get_tokenizer(name), get_tokenizer(f"tiktoken:{name}")
    assert type(slow).__name__ == "TiktokenTokenizer"
    assert fast.id == slow.id == tokenizer_id(name) == tokenizer_id(f"tiktoken:{name}") == f"tiktoken:{name}"
    text = "naïve café — 🚀 <|endoftext|> 12345\n\tdef f(): return 'x'\n"
    assert fast.decode(fast.encode(text)) == ref.decode(ref.encode_ordinary(text)) == text


def test_qwen3_and_llama3_load_from_the_wheel() -> None:
    qwen, llama = get_tokenizer("qwen3"), get_tokenizer("llama3")
    assert (qwen.id, llama.id) == ("quicktok:qwen3", "quicktok:llama3")
    assert (tokenizer_id("qwen3"), tokenizer_id("llama3")) == (qwen.id, llama.id)
    text = "Hello world! 你好，世界 def f(x): return x ** 2\n"
    for tok in (qwen, llama):
        assert tok.exact and tok.decode(tok.encode(text)) == text
        assert tok.count(text) == len(tok.encode(text)) > 5
    # Qwen's vocabulary splits digits one by one; Llama 3's groups them in threes.
    assert qwen.count("1234567") == 7 and llama.count("1234567") == 3


def test_exact_o200k_offline_with_an_empty_tiktoken_cache(tmp_path: Path) -> None:
    """No network (a dead proxy), no tiktoken file: o200k_base still counts exactly."""
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")}
    env.update(TIKTOKEN_CACHE_DIR=str(tmp_path), HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    code = (
        "from ctxmem.tokens import get_tokenizer\n"
        "t = get_tokenizer('o200k_base'); c = get_tokenizer('cl100k_base')\n"
        "print(type(t).__name__, t.id, t.exact, t.count('hello world, 12345'), c.count('hello world, 12345'))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["QuicktokTokenizer", "tiktoken:o200k_base", "True", "6", "6"]
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or written


def test_lone_surrogates_count_like_tiktoken_in_every_path() -> None:
    """tiktoken replaces a lone surrogate with U+FFFD; quicktok's engine refuses the str, so
    the backend applies the same rule in count, count_many (fast and wrapped) and encode."""
    tok = get_tokenizer("o200k_base")
    texts = ["plain", "a\ud800b", "=" * 5000 + "\udfff", "\ud83d\ude00 pair"]
    fixed = [t.encode("utf-16", "surrogatepass").decode("utf-16", "replace") for t in texts]
    engine = quicktok.get_encoding("o200k_base")
    expected = [engine.count(t) for t in fixed]
    assert tok.count_many(texts) == [tok.count(t) for t in texts] == expected
    assert tok.count_many(texts[:1]) == expected[:1]
    assert [len(tok.encode(t)) for t in texts] == expected


# --------------------------------------------------------------------------- tiktoken's files, offline


def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken.load

    def refuse(blobpath: str) -> bytes:
        raise AssertionError(f"tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


@pytest.mark.parametrize("name", ENCODINGS)
def test_tiktoken_loads_the_file_rebuilt_from_quicktok_without_a_download(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tiktoken checks a cached file against its own SHA-256 and downloads again on a
    mismatch: loading it with downloads refused proves the rebuilt file is OpenAI's."""
    import tiktoken
    import tiktoken.registry

    from ctxmem.tokens import provision_tiktoken_cache
    from ctxmem.tokens.tiktoken_backend import cache_file_for

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    _no_download(monkeypatch)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, name, raising=False)  # load it again, from tmp_path
    got = provision_tiktoken_cache([name])
    assert got == {name: cache_file_for(name)} and Path(got[name]).parent == tmp_path
    enc = tiktoken.get_encoding(name)
    engine = quicktok.get_encoding(name)
    for text in ("naïve café — 🚀 <|endoftext|> 12345", "def f(x):\n\treturn x ** 2  # 中文\n", "Привет, мир"):
        assert enc.encode_ordinary(text) == engine.encode_ordinary(text)
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, name, raising=False)  # nothing from tmp_path outlives it


def test_provisioning_is_idempotent_repairs_a_damaged_file_and_never_half_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from ctxmem.tokens import provision_tiktoken_cache

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    path = Path(provision_tiktoken_cache(["cl100k_base"])["cl100k_base"] or "")
    good = path.read_bytes()
    assert hashlib.sha256(good).hexdigest() == "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
    before = path.stat().st_mtime_ns
    assert provision_tiktoken_cache(["cl100k_base"]) == {"cl100k_base": str(path)}
    assert path.stat().st_mtime_ns == before  # intact: left as is
    path.write_bytes(good[: len(good) // 2])  # a download cut short
    assert provision_tiktoken_cache(["cl100k_base"]) == {"cl100k_base": str(path)}
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


def test_provisioning_says_none_where_it_cannot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ctxmem.tokens import provision_tiktoken_cache

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert provision_tiktoken_cache(["p50k_base", "r50k_base"]) == {"p50k_base": None, "r50k_base": None}
    assert list(tmp_path.iterdir()) == []  # quicktok does not bundle them: nothing written
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's cache turned off: nowhere to put it
    assert provision_tiktoken_cache(["o200k_base"]) == {"o200k_base": None}
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    assert provision_tiktoken_cache(["o200k_base"]) == {"o200k_base": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_tiktoken_engine_replaces_a_damaged_file_without_a_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cut-short file in tiktoken's cache: tiktoken drops it and would download again;
    ctxmem's ``tiktoken:`` engine writes the rebuilt file instead and loads."""
    import tiktoken.registry

    from ctxmem.tokens import tiktoken_backend
    from ctxmem.tokens.tiktoken_backend import TiktokenTokenizer, cache_file_for

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    _no_download(monkeypatch)
    Path(cache_file_for("cl100k_base")).write_bytes(b"IQ== 0\nIg== 1\n")
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "cl100k_base", raising=False)
    tiktoken_backend._load.cache_clear()
    try:
        tok = TiktokenTokenizer("cl100k_base")
        text = "naïve café — 🚀 <|endoftext|> 12345"
        assert tok.encode(text) == quicktok.get_encoding("cl100k_base").encode_ordinary(text)
    finally:
        tiktoken_backend._load.cache_clear()
        monkeypatch.delitem(tiktoken.registry.ENCODINGS, "cl100k_base", raising=False)
