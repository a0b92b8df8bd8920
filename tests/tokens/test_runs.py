"""Long runs of one character: shortened before the engine, and the count stays exact.

The reference is the *unsplit* count of the same text: tiktoken's encode_ordinary when its
file is available (quadratic on a long run, fine at these sizes), else quicktok's own
engine on the whole text. Linearity is asserted structurally (what reaches the engine),
never with a timer.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxmem.tokens import get_tokenizer
from ctxmem.tokens.runs import KEEP, MAX_PERIOD, MIN_RUN, RunSplitter, find_runs

quicktok = pytest.importorskip("quicktok", reason="quicktok-v1 is not installed")

ENCODINGS = ["o200k_base", "cl100k_base"]

RUN_CHARS = [*"aZx7 \t\n\r-=*#./_~'`\"!?,;:()[]{}<>|\\@$%^&+", "é", "ß", "中", "🚀", "\u00a0", "\u0301", "\u2028", "٣"]
CONTEXT_PIECES = [
    "",
    " ",
    "\n",
    "\r\n",
    "  ",
    "x",
    "ABC",
    "abc",
    "Hello",
    "'s",
    "'ll ",
    "123",
    "12",
    "-",
    "=",
    "/",
    "é",
    "中文",
    "🚀",
    "a-b",
    " \n",
    "\t",
    ":",
    "\u0301",
]
context = st.lists(st.sampled_from(CONTEXT_PIECES), max_size=4).map("".join)


@st.composite
def texts_with_runs(draw: st.DrawFn) -> str:
    parts = [draw(context)]
    for _ in range(draw(st.integers(1, 3))):
        c = draw(st.sampled_from(RUN_CHARS) | st.characters(codec="utf-8"))
        parts.append(c * draw(st.integers(MIN_RUN - 2, 3 * MIN_RUN)))
        parts.append(draw(context))
    return "".join(parts)


def _reference(name: str) -> Callable[[str], int]:
    import tiktoken

    try:
        enc = tiktoken.get_encoding(name)
    except Exception:  # no tiktoken file here: quicktok's engine on the unsplit text
        return quicktok.get_encoding(name).count  # type: ignore[no-any-return]
    return lambda text: len(enc.encode_ordinary(text))


@pytest.mark.parametrize("name", ENCODINGS)
@given(text=texts_with_runs())
def test_shortened_runs_count_exactly(name: str, text: str) -> None:
    expected = _reference(name)(text)
    assert get_tokenizer(name).count(text) == expected
    if _has_tiktoken(name):  # the tiktoken engine shortens runs the same way
        assert get_tokenizer(f"tiktoken:{name}").count(text) == expected


def _has_tiktoken(name: str) -> bool:
    import tiktoken

    try:
        tiktoken.get_encoding(name)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("c", ["a", "-", " ", "\n", "7", "=", "🚀", "é", "."])
def test_a_megabyte_run_equals_the_unsplit_engine(name: str, c: str) -> None:
    """1M characters in prose context: the shortened count equals quicktok's unsplit count
    (quicktok is linear, so the reference stays affordable at this size)."""
    text = "Result:\n" + c * 1_000_003 + "\nend of output, 42 items."
    assert get_tokenizer(name).count(text) == quicktok.get_encoding(name).count(text)


def test_the_engine_never_sees_a_long_run() -> None:
    seen: list[str] = []
    engine = quicktok.get_encoding("o200k_base").count

    def spy(text: str) -> int:
        seen.append(text)
        return int(engine(text))

    work = []
    for scale in (1, 4):
        seen.clear()
        splitter = RunSplitter(spy)
        text = "head " + "=" * (500_000 * scale) + " middle " + "a" * (125_000 * scale) + " tail " + "7" * 99_999
        assert splitter.count(text) == engine(text)
        longest = max(len(m.group()) for t in seen for m in re.finditer(r"(.)\1*", t))
        assert longest < KEEP + 2 * MAX_PERIOD + 1  # bounded, whatever the run's length
        work.append(sum(map(len, seen)))  # period checks + context checks + the shortened text
    # four times the run, the same work (the kept remainder differs by less than a period per run)
    assert abs(work[0] - work[1]) < 2 * MAX_PERIOD


def test_short_texts_and_prose_go_to_the_engine_untouched() -> None:
    seen: list[str] = []
    splitter = RunSplitter(lambda t: seen.append(t) or len(t))
    prose = "The kernel failed to compile; shared memory limit exceeded. " * 2000
    assert splitter.count("x" * (MIN_RUN - 1)) == MIN_RUN - 1
    assert splitter.count(prose) == len(prose)
    assert seen == ["x" * (MIN_RUN - 1), prose]


@given(
    segments=st.lists(
        st.tuples(st.sampled_from("ab- \n"), st.integers(1, 3 * MIN_RUN)),
        min_size=1,
        max_size=8,
    )
)
def test_find_runs_finds_every_maximal_run(segments: list[tuple[str, int]]) -> None:
    text = "".join(c * n for c, n in segments)
    expected = [(m.start(), m.end()) for m in re.finditer(r"(.)\1*", text, re.S) if m.end() - m.start() >= MIN_RUN]
    assert find_runs(text, MIN_RUN) == expected


def test_a_character_without_a_period_is_never_shortened() -> None:
    # A made-up engine with no period: one token per run of length a perfect square.
    def engine(text: str) -> int:
        return sum(1 + int(len(m.group()) ** 0.5) for m in re.finditer(r"(.)\1*", text, re.S))

    splitter = RunSplitter(engine)
    text = "q" * (5 * MIN_RUN)
    assert splitter.period("q") is None
    assert splitter.count(text) == engine(text)


@pytest.mark.slow
@pytest.mark.parametrize("name", ENCODINGS)
def test_every_printable_ascii_run_shortens_exactly(name: str) -> None:
    """Every printable ASCII character (and whitespace), runs up to 100K in varied contexts,
    against the unsplit reference: the checked period holds far beyond the checked range."""
    import random

    rng = random.Random(20261204)
    reference = _reference(name)
    tok = get_tokenizer(name)
    chars = [chr(i) for i in range(32, 127)] + ["\t", "\n", "\r"]
    for c in chars:
        for _ in range(4):
            n = rng.randint(MIN_RUN, 100_000)
            text = rng.choice(CONTEXT_PIECES) + c * n + rng.choice(CONTEXT_PIECES)
            assert tok.count(text) == reference(text), (c, n)
