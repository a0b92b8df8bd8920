"""The cell-build benchmark's two methods, at a small length: both build what they claim.

No timing is asserted here (speed lives in ``benchmarks/bench_evals.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from ctxmem.errors import InputError
from ctxmem.evals.bench import NEEDLE, bench_cell_build, corpus_files, naive_build
from ctxmem.evals.haystack import build_document, encoded_haystack
from ctxmem.evals.sources import get_source
from ctxmem.tokens import EncodingTokenizer, get_tokenizer


@pytest.fixture(autouse=True)
def _tiktoken(o200k: Any) -> None:
    """Measured in o200k_base (skips when it cannot be loaded)."""


def test_both_methods_claim_their_real_length() -> None:
    r = bench_cell_build(6_000, repeats=2, naive_repeats=1, pass_tokens=1_500)
    assert r["claimed_tokens"] == r["real_tokens"] == 6_000
    assert r["naive_claimed_tokens"] == r["naive_real_tokens"] == 6_000
    # the naive harness re-reads its folder: one encode per pass (≥ 4 passes of 1.5k to reach 6k)
    # plus encode-and-trim, insert and the final count
    assert r["naive_encodes"] >= 4 + 3
    assert r["naive_encoded_tokens"] > 3 * 6_000
    assert r["splice_s"] > 0 and r["naive_s"] > 0


def test_naive_build_places_the_needle_at_a_sentence_end_near_the_depth() -> None:
    tok = get_tokenizer("o200k_base")
    assert isinstance(tok, EncodingTokenizer)
    files = corpus_files(encoded_haystack(get_source("prose"), tok), 3_000, file_tokens=500)
    assert len(files) >= 5
    hay = encoded_haystack(get_source("prose"), tok)
    for depth in (0.0, 0.5, 1.0):
        cell = naive_build(tok, files, 2_000, depth)
        assert cell.text.count(NEEDLE) == 1
        assert cell.real_tokens == tok.count(cell.text)
        # the harness decodes a spliced token list; at a boundary the re-encode can merge
        # tokens (at depth 0 "…48213." + "The" loses one), so its claim is only near the truth
        assert abs(cell.claimed_tokens - cell.real_tokens) <= 2
        if depth == 0.5:
            assert cell.claimed_tokens == cell.real_tokens
        doc = build_document(hay, 2_000, [(NEEDLE, depth, "needle")])
        assert doc.tokens == tok.count(doc.text)  # ctxmem's claim is exact at every depth
        before = cell.text.split(NEEDLE)[0]
        assert before.strip() == "" or before.rstrip().endswith(".")
        assert abs(tok.count(before) / cell.real_tokens - depth) < 0.1
    # the grid's largest length makes the harness read more, not build differently
    small = naive_build(tok, files, 2_000, 0.5)
    big = naive_build(tok, files, 2_000, 0.5, max_length=9_000)
    assert big.text == small.text and big.encodes > small.encodes


def test_bad_benchmark_input_is_clear() -> None:
    tok = get_tokenizer("o200k_base")
    assert isinstance(tok, EncodingTokenizer)
    with pytest.raises(InputError, match="non-empty haystack file"):
        naive_build(tok, [], 1_000, 0.5)
    with pytest.raises(InputError, match="depth"):
        naive_build(tok, ["Some text."], 1_000, 1.5)
    with pytest.raises(InputError, match="positive"):
        bench_cell_build(0)
