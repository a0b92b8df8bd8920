"""Exactness of the per-line counts the pipeline's tail relies on, and of the ASCII
summary_line fast path."""

from __future__ import annotations

import random

import pytest

from ctxmem.context import reducers
from ctxmem.context.summarize import joined_count, newline_additive
from ctxmem.tokens import get_tokenizer

# characters around a joining newline that the pre-tokenizer treats specially
_ALPHA = [" ", "  ", "\t", "\x0b", "\x0c", "\x85", "\u2028", "\u00a0", ".", "/", "//", "'", "'s", "s", "A", "ab", "1",
          "123", "1234", "é", "\u0301", "中文", "-", "[", "·", "<|endoftext|>", "x", "\r", "!", "…", "😀", ":", "'LL", "_"]


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_joined_count_equals_the_whole_count(encoding: str) -> None:
    try:
        tok = get_tokenizer(encoding)
    except Exception:  # the encoding file is not cached here
        pytest.skip(f"{encoding} not available")
    assert newline_additive(tok)
    rng = random.Random(7)
    for _ in range(20_000):
        lines = ["".join(rng.choice(_ALPHA) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(2, 5))]
        assert joined_count(tok, lines) == tok.count("\n".join(lines)), lines


def test_other_tokenizers_count_the_joined_text() -> None:
    class Whole:
        id = "whole"

        def count(self, text: str) -> int:
            return len(text)

        def count_many(self, texts: list[str]) -> list[int]:
            raise AssertionError("no per-line counts for an unknown tokenizer")

    assert not newline_additive(Whole())  # type: ignore[arg-type]
    assert joined_count(Whole(), ["ab", "cd"]) == 5  # type: ignore[arg-type]


def _summary_reference(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "(empty output)"
    summary = next((ln for ln in reversed(lines) if reducers._SUMMARY.search(ln)), lines[-1])
    return summary if summary == lines[0] else f"{lines[0]} … {summary}"


def test_summary_line_fast_path_matches_the_regex_scan() -> None:
    rng = random.Random(3)
    alpha = ["Total", "MEAN", "x", " ", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\t",
             "best", "speed", "up", "geo", "mean", "1.2x", "FAILED", "|", "ſummary", "é"]
    for _ in range(50_000):
        text = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 12)))
        assert reducers.summary_line(text) == _summary_reference(text), repr(text)
