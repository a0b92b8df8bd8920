"""Linear-time counting of pathological text: long runs of one character are shortened
before they reach the BPE engine, and the tokens they stood for are added back.

Why: a BPE engine merges within one pre-token, and a run of one character is one
pre-token however long it is. tiktoken's merge loop is quadratic in a pre-token's length
(100,000 × "a" takes 26 ms, 6× the same length of prose; 10 MB would take minutes), and
quicktok is linear but slow on punctuation runs (0.5 µs per "-", ~100× prose). A tool
that prints 10 MB of "=" must not stall the agent. With this module, a run of any length
costs one scan plus a few short encodes.

What is done. :meth:`RunSplitter.count` looks for runs of one character of length ≥
``MIN_RUN`` (a strided sample of the text, so prose pays ~1/2000 of a pass), and
replaces each by a run of length in ``[KEEP, KEEP + P)`` where ``P`` is the character's
*period*, adding ``D`` tokens for each ``P`` characters removed::

    count(x + c*n + y) == count(x + c*(n - k*P) + y) + k*D        (n - k*P >= KEEP)

Why it is exact. Three steps, for the o200k_base and cl100k_base pre-tokenizer patterns
(``O200K_PATTERN`` / ``CL100K_PATTERN`` below, the same strings tiktoken uses; quicktok
gives the same ids, tested differentially):

1. *Pre-tokens.* Shortening a run of ``c`` (still ≥ ``KEEP`` long) leaves every
   pre-token outside the run unchanged and shortens the run's pre-token(s) by whole
   periods. Every alternative of both patterns is either an unbounded repetition of a
   class (``\\p{L}+``, ``[^\\s\\p{L}\\p{N}]+``, ``\\s+``, ``\\s*[\\r\\n]+``, possessive or not)
   or a bounded one (``\\p{N}{1,3}``, an optional one-character prefix, the contraction
   suffixes, cl100k's single ``\\s``). A match that reaches the run from its left, or
   starts at its first character, either takes the whole run (the class contains ``c``,
   and every character after it inside the run is ``c`` too) or, for ``\\s+(?!\\S)``,
   backtracks exactly one character off the run's end — decided by the one character
   after the run, which shortening does not change. The only alternative that cuts a run
   inside is ``\\p{N}{1,3}``: a digit run becomes pieces of three from its left end, so for
   digits ``P`` is a multiple of 3 and whole pieces are removed. The lookahead
   ``(?!\\S)`` and the anchor ``$`` read at most one character past a match, which lies
   outside the removed middle. Hence the piece sequences of both texts are equal except
   that one piece (two for a whitespace run split by ``\\s+(?!\\S)``, the second of length
   1) differs by ``k*P`` copies of ``c`` in its middle.
2. *BPE boundaries (proved).* In tiktoken's merge rule (repeatedly merge the adjacent pair
   whose concatenation has the lowest rank, leftmost among equals), if position ``p`` is a
   boundary of the final tokens of a piece ``s``, then ``tokens(s) == tokens(s[:p]) +
   tokens(s[p:])``: no merge ever crossed ``p`` (merges only grow tokens); a merge on the
   left was the global minimum when made, so it is also the minimum, and leftmost, among
   left pairs — the left half alone makes the same merges in the same order and stops
   when no left pair can merge, as in the whole; the same holds for the right half, whose
   pairs all lie right of every left pair, so "leftmost among equals" picks the same pair.
3. *Periodic middle (checked, not proved for all n).* In a long run of one character
   the merge rule pairs equal blocks from the left, phase by phase (a, aa, aaaa, …), until
   the longest block the vocabulary allows; end effects reach at most the longest token of
   ``c`` (≤ 128 bytes in these vocabularies) into the run. So the middle of the run is a
   sequence of identical tokens, each a token boundary on both sides, and by step 2
   removing ``P`` characters there removes exactly ``D`` tokens. Were the ranks of ``c``,
   ``cc``, ``ccc``, … increasing with length, this would be a proof: the merges would run in
   phases by block length, each a left-to-right greedy pass whose choice at a block depends
   only on that block, the next one and whether the previous was taken — a finite-state
   scan that repeats with the input, so one more period in the middle adds one period of
   output and leaves the rest alone. They are not (four spaces rank below three in both
   vocabularies; 32 of the 98 printable ASCII characters and tab/CR/LF break the order in
   o200k), so this step is an argument about the vocabulary, not a theorem, and it is
   *checked* before it is used: the period of each character is measured on bare runs of length ``KEEP`` to
   ``KEEP + 4P`` (every length in between must satisfy the identity), and each shortened
   run is re-checked in its own context (64 characters either side) at two lengths. A
   character or context that fails a check is counted unshortened — slower, never wrong.
   ``tests/tokens/test_runs.py`` fuzzes the identity against the unshortened tiktoken
   count (runs of any character in mixed contexts), and its slow test checks every
   printable ASCII character at random lengths up to 100,000 in both encodings.

Runs shorter than ``MIN_RUN`` are never touched; texts shorter than ``MIN_RUN`` cost one
length test.
"""

from __future__ import annotations

from collections.abc import Callable

#: tiktoken's o200k_base pre-tokenizer pattern
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
#: tiktoken's cl100k_base pre-tokenizer pattern
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_PATTERNS = {"o200k_base": O200K_PATTERN, "cl100k_base": CL100K_PATTERN}

#: a run this long (characters) is shortened; shorter ones are left to the engine
MIN_RUN = 4096
#: a shortened run keeps at least this many characters (far past any end effect)
KEEP = 512
#: the longest period looked for, in characters (the longest run token is 128 bytes)
MAX_PERIOD = 256
#: context kept on each side of a run when its shortening is re-checked
CONTEXT = 64


def pattern_for(encoding: str) -> str | None:
    """The pre-tokenizer regex of ``encoding`` when the run argument covers it, else None."""
    return _PATTERNS.get(encoding)


class RunSplitter:
    """Counts text with ``raw`` (an exact engine's count), shortening long runs first."""

    def __init__(self, raw: Callable[[str], int]):
        self._raw = raw
        self._periods: dict[str, tuple[int, int] | None] = {}

    @classmethod
    def for_encoding(cls, encoding: str, raw: Callable[[str], int]) -> RunSplitter | None:
        """A splitter for an encoding whose pattern the argument covers, else None."""
        return cls(raw) if encoding in _PATTERNS else None

    # ------------------------------------------------------------------ counting

    def count(self, text: str) -> int:
        if len(text) < MIN_RUN:
            return self._raw(text)
        runs = find_runs(text, MIN_RUN)
        if not runs:
            return self._raw(text)
        parts: list[str] = []
        extra = 0
        pos = 0
        for start, end in runs:
            c = text[start]
            period = self.period(c)
            if period is None:
                continue
            p, d = period
            n = end - start
            k = (n - KEEP) // p
            if k <= 0 or not self._context_ok(text, start, end, p, d):
                continue
            parts.append(text[pos:start])
            parts.append(c * (n - k * p))
            extra += k * d
            pos = end
        if not parts:
            return self._raw(text)
        parts.append(text[pos:])
        return self._raw("".join(parts)) + extra

    # ------------------------------------------------------------------ checks

    def period(self, c: str) -> tuple[int, int] | None:
        """``(P, D)``: removing ``P`` characters from a long run of ``c`` removes ``D``
        tokens, checked at every run length from ``KEEP`` to ``KEEP + 4P``; None when no
        period up to ``MAX_PERIOD`` passes (then runs of ``c`` are never shortened)."""
        if c in self._periods:
            return self._periods[c]
        raw = self._raw
        memo: dict[int, int] = {}

        def f(n: int) -> int:
            if n not in memo:
                memo[n] = raw(c * n)
            return memo[n]

        found: tuple[int, int] | None = None
        for p in range(1, MAX_PERIOD + 1):
            if c.isdigit() and p % 3:
                continue  # digit runs pre-tokenize in threes: remove whole pieces only
            d = f(KEEP + p) - f(KEEP)
            if d > 0 and all(f(n) - f(n - p) == d for n in range(KEEP, KEEP + 4 * p + 1)):
                found = (p, d)
                break
        self._periods[c] = found
        return found

    def _context_ok(self, text: str, start: int, end: int, p: int, d: int) -> bool:
        left = text[max(0, start - CONTEXT) : start]
        right = text[end : end + CONTEXT]
        c = text[start]
        raw = self._raw
        base = raw(left + c * KEEP + right)
        return raw(left + c * (KEEP + p) + right) - base == d and raw(left + c * (KEEP + 2 * p) + right) - base == 2 * d


def find_runs(text: str, min_run: int) -> list[tuple[int, int]]:
    """Maximal runs of one character of length ≥ ``min_run``, as ``(start, end)``, in order.

    A run that long covers two consecutive sample points ``stride`` apart (stride =
    ``min_run // 2``) with the whole stretch between them equal, so only sample pairs are
    examined in Python; stretches are tested and runs extended with C-speed string
    operations (``count``, ``strip``).
    """
    stride = max(1, min_run // 2)
    n = len(text)
    samples = text[::stride]
    runs: list[tuple[int, int]] = []
    i = 0
    last_end = 0
    m = len(samples)
    while i < m - 1:
        c = samples[i]
        if samples[i + 1] != c:
            i += 1
            continue
        a = i * stride
        if text.count(c, a, a + stride + 1) != stride + 1:
            i += 1
            continue
        j = i + 1
        while j < m - 1 and samples[j + 1] == c and text.count(c, j * stride, (j + 1) * stride + 1) == stride + 1:
            j += 1
        b = j * stride + 1
        # extend to the run's true ends (each at most one stride away)
        lo = max(last_end, a - stride)
        head = text[lo:a]
        start = a - (len(head) - len(head.rstrip(c)))
        tail = text[b : min(n, b + stride)]
        end = b + (len(tail) - len(tail.lstrip(c)))
        if end - start >= min_run:
            runs.append((start, end))
            last_end = end
        i = j + 1
    return runs
