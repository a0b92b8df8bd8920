"""Token-exact placement: length within 0.5% and never above, needle at the requested depth
within one unit, the claimed count equal to a full re-encode — across tokenizers and sources."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from ctxmem.errors import InputError
from ctxmem.evals.haystack import build_document, encoded_haystack
from ctxmem.evals.sources import FolderSource, get_source, split_units
from support import load_tokenizer_or_skip

LENGTHS = (1_000, 3_000, 20_000)


@pytest.fixture(params=["o200k_base", "cl100k_base", "deepseek"], scope="module")
def tokenizer(request: pytest.FixtureRequest) -> Any:
    if request.param == "deepseek":
        path = request.getfixturevalue("deepseek_tokenizer_path")
        from ctxmem.tokens import get_tokenizer

        return get_tokenizer(f"hf:{path}")
    return load_tokenizer_or_skip(request.param)


def _check(tok: Any, hay: Any, target: int, inserts: list[tuple[str, float, str]]) -> None:
    doc = build_document(hay, target, inserts)
    # The arithmetic count is the real count of the text: no unit boundary merged tokens.
    assert tok.count(doc.text) == doc.tokens
    assert doc.tokens <= target
    assert doc.tokens >= 0.995 * target
    units = hay.counts[: doc.units_used]
    max_unit = max(units) if units else 0
    for sentence, _, _ in inserts:
        assert sentence.strip() in doc.text
    for p in doc.placed:
        start = doc.text.index(p.text)
        # The reported offset is the real token position of the needle ...
        assert tok.count(doc.text[:start]) == p.token_offset
        # ... and it is within one unit (sentence/line) of the requested depth, counting
        # the needles placed before it.
        others = sum(tok.count(q.text) for q in doc.placed if q.token_offset < p.token_offset)
        want = p.requested_depth * doc.haystack_tokens
        assert abs(p.token_offset - others - want) <= max_unit


@pytest.mark.parametrize("source", ["prose", "code", "log"])
def test_length_and_depth_exact(tokenizer: Any, source: str) -> None:
    hay = encoded_haystack(get_source(source), tokenizer)
    rng = random.Random(7)
    for target in LENGTHS:
        for depth in (0.0, 0.33, 0.5, 1.0):
            inserts = [(f"The archive code assigned to the amber falcon is QX{rng.randint(2, 9)}-{rng.randint(10000, 99999)}.",
                        depth, "needle")]
            if rng.random() < 0.5:
                inserts.append(("The archive code assigned to the amber heron is ZZ3-12345.", rng.random(), "distractor"))
            _check(tokenizer, hay, target, inserts)


def test_haystack_is_encoded_once_and_grows(o200k: Any) -> None:
    hay = encoded_haystack(get_source("prose", seed=123), o200k)
    build_document(hay, 2_000, [("The code is AB3-12345.", 0.5, "needle")])
    n_units = len(hay.units)
    build_document(hay, 1_500, [("The code is AB3-12345.", 0.2, "needle")])
    assert len(hay.units) == n_units  # a shorter cell encodes nothing new
    build_document(hay, 30_000, [("The code is AB3-12345.", 0.2, "needle")])
    assert len(hay.units) > n_units
    assert encoded_haystack(get_source("prose", seed=123), o200k) is hay


def test_user_folder_source(tmp_path: Path, o200k: Any) -> None:
    (tmp_path / "notes.md").write_text(
        "# Notes\n\nFirst point here. Second point follows!  Third one?\n\n    indented code = 1\n"
        "Tabs\tand  double  spaces. End.\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Line one.\nLine two. Same line.\n\n\nAfter blanks.", encoding="utf-8")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00binary")
    text = (tmp_path / "notes.md").read_text()
    assert "".join(split_units(text)) == text
    src = FolderSource(str(tmp_path))
    hay = encoded_haystack(src, o200k)
    _check(o200k, hay, 1_200, [("The archive code assigned to the teal ibis is KL4-55555.", 0.5, "needle")])
    assert "Line two." in "".join(hay.units)


def test_empty_folder_is_a_clear_error(tmp_path: Path, o200k: Any) -> None:
    (tmp_path / "empty.txt").write_text("   \n", encoding="utf-8")
    hay = encoded_haystack(FolderSource(str(tmp_path)), o200k)
    with pytest.raises(InputError, match="no non-empty UTF-8 text"):
        build_document(hay, 1_000, [("x is AB3-12345.", 0.5, "needle")])
    with pytest.raises(InputError, match="does not exist"):
        _ = FolderSource(str(tmp_path / "missing")).id


def test_needle_that_cannot_be_placed(o200k: Any) -> None:
    hay = encoded_haystack(get_source("prose"), o200k)
    with pytest.raises(InputError, match="needles need"):
        build_document(hay, 12, [("The archive code assigned to the amber falcon is QX7-48213.", 0.5, "needle")])
    with pytest.raises(InputError, match="outside"):
        build_document(hay, 1_000, [("The code is AB3-12345.", 1.5, "needle")])
