"""Encoded haystacks and token-exact placement.

An :class:`EncodedHaystack` is a source's units with each unit's token count in one
tokenizer and the prefix sums of those counts, built **once per (source, tokenizer)** and
grown on demand (a longer cell encodes only the new units). A cell's document is then

    units[0:k]  ·  a partial unit (token-prefix of units[k])  ·  needles spliced at unit boundaries

and its length is arithmetic on the prefix sums — no cell re-encodes the haystack.
Building a 1M-token cell costs a bisect, one encode of one unit (the partial fill), the
needles' encodes, and one ``"".join`` of the chosen units.

**Length.** The document is filled to exactly ``target`` tokens when the tokenizer can
encode and decode (the partial unit is cut at a token boundary and re-counted), so the
result is within a token or two of the target and never above it; with a count-only
tokenizer the fill stops at the last whole unit.

**Depth.** Depth ``d`` is a fraction of the document's tokens. A needle is inserted at the
unit boundary nearest to ``d × document_tokens``, so it starts within one unit (one
sentence or line) of the requested position; the achieved depth is reported.

**Splicing.** A needle sentence is formatted for the boundary it lands on (a leading
space when it continues a line, a trailing newline when the next unit starts a line) so
the tokenization contract of :mod:`ctxmem.evals.sources` holds for the spliced text too.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from ctxmem.errors import InputError
from ctxmem.evals.sources import Source
from ctxmem.tokens import EncodingTokenizer, Tokenizer

_GROW_BATCH = 2048  # units counted per batch when growing


class NeedleUnplaceableError(InputError):
    """A cell's needles cannot be placed at its length (or its session lacks what it needs).

    The outcome cannot change on a rerun with the same config, so the runner records the
    cell as ``refused`` (permanent), not as an error to retry.
    """


@dataclass
class EncodedHaystack:
    """A source's units, their token counts in one tokenizer, and prefix sums. Grows only."""

    source: Source
    tokenizer: Tokenizer
    units: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    cum: list[int] = field(default_factory=lambda: [0])
    exhausted: bool = False
    _it: Iterator[str] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total(self) -> int:
        return self.cum[-1]

    def ensure(self, tokens: int) -> None:
        """Encode more units until the haystack holds at least ``tokens`` tokens."""
        with self._lock:
            if self._it is None:
                self._it = iter(self.source.units())
            while self.cum[-1] < tokens and not self.exhausted:
                batch: list[str] = []
                for u in self._it:
                    if u:
                        batch.append(u)
                    if len(batch) >= _GROW_BATCH:
                        break
                else:
                    self.exhausted = True
                if not batch:
                    break
                counts = self.tokenizer.count_many(batch)
                self.units.extend(batch)
                self.counts.extend(counts)
                self.cum.extend(list(accumulate(counts, initial=self.cum[-1]))[1:])
        if self.cum[-1] == 0:
            raise InputError(f"haystack source {self.source.name!r} is empty", field="source")
        if self.cum[-1] < tokens:
            raise InputError(
                f"haystack source {self.source.name!r} holds only {self.cum[-1]} tokens in "
                f"{self.tokenizer.name}; {tokens} were asked for",
                field="source",
            )


_CACHE: dict[tuple[str, str], EncodedHaystack] = {}
_CACHE_LOCK = threading.Lock()


def encoded_haystack(source: Source, tokenizer: Tokenizer) -> EncodedHaystack:
    """The process-wide encoded haystack for (source, tokenizer), created on first use."""
    key = (source.id, tokenizer.id)
    with _CACHE_LOCK:
        h = _CACHE.get(key)
        if h is None:
            if len(_CACHE) > 32:
                _CACHE.clear()
            h = _CACHE[key] = EncodedHaystack(source, tokenizer)
        return h


@dataclass(frozen=True)
class Placed:
    """One sentence placed in a document: where it was asked to go and where it went."""

    text: str  # the sentence as written in the document (with its boundary whitespace)
    requested_depth: float
    depth: float  # achieved: tokens before it / document tokens
    token_offset: int
    role: str


@dataclass(frozen=True)
class Document:
    """A built haystack document with needles spliced in."""

    text: str
    tokens: int
    target: int
    placed: tuple[Placed, ...]
    #: tokens of haystack used (excluding needles); > haystack total means it was cycled
    haystack_tokens: int
    units_used: int


def _boundary_format(sentence: str, prev: str | None, nxt: str | None) -> str:
    prefix = "" if prev is None or prev.endswith("\n") else " "
    suffix = "" if nxt is not None and nxt[:1] in (" ", "\t") else "\n"
    return prefix + sentence.strip() + suffix


def _partial(tokenizer: Tokenizer, unit: str, tokens: int) -> tuple[str, int]:
    """The longest token-prefix of ``unit`` that counts at most ``tokens`` on its own."""
    if tokens <= 0 or not isinstance(tokenizer, EncodingTokenizer):
        return "", 0
    ids = tokenizer.encode(unit)
    j = min(tokens, len(ids))
    while j > 0:
        text = tokenizer.decode(ids[:j]).rstrip()  # trailing space would merge with what follows
        if "\ufffd" not in text:  # a cut inside a multi-byte character
            n = tokenizer.count(text)
            if n <= tokens and text.strip():
                return text, n
        j -= 1
    return "", 0


def build_document(
    haystack: EncodedHaystack,
    target: int,
    inserts: Sequence[tuple[str, float, str]],
    *,
    reserved: int = 0,
) -> Document:
    """A document of exactly ``target - reserved`` tokens (or just under) with ``inserts``.

    ``inserts`` are ``(sentence, depth, role)``; ``reserved`` tokens are left for what the
    caller adds beside the document (the question block).
    """
    tok = haystack.tokenizer
    budget = target - reserved
    if budget <= 0:
        raise NeedleUnplaceableError(f"target length {target} leaves no room for a document ({reserved} tokens reserved)",
                         field="length")
    # Needle sentences formatted for a mid-line boundary have one more leading space; count
    # both shapes once so the fill can account for whichever the boundary needs.
    needle_max = 0
    for sentence, _, _ in inserts:
        s = sentence.strip()
        needle_max += max(tok.count_many([" " + s, s + "\n", " " + s + "\n", s]))
    fill = budget - needle_max
    if fill <= 0:
        raise NeedleUnplaceableError(
            f"needles need {needle_max} tokens but the target length {target} leaves {budget}: "
            "use a longer length or fewer needles",
            field="length",
        )
    haystack.ensure(fill + 1)
    cum = haystack.cum
    k = bisect_right(cum, fill) - 1  # units[0:k] fit
    base = cum[k]
    part_text, part_n = _partial(tok, haystack.units[k], fill - base) if k < len(haystack.units) else ("", 0)
    body = haystack.units[:k] + ([part_text] if part_text else [])
    body_cum = cum[: k + 1] + ([base + part_n] if part_text else [])
    body_tokens = body_cum[-1]

    # Insert positions: nearest unit boundary to depth × body tokens. Boundaries are unit
    # indices 0..len(body); several needles may share a boundary (kept in input order).
    positions: list[tuple[int, int, str, float, str]] = []
    for order, (sentence, depth, role) in enumerate(inserts):
        if not 0.0 <= depth <= 1.0:
            raise InputError(f"depth {depth} is outside [0, 1]", field="depth")
        want = depth * body_tokens
        i = bisect_left(body_cum, want)
        if i > 0 and (i >= len(body_cum) or want - body_cum[i - 1] <= body_cum[i] - want):
            i -= 1
        positions.append((i, order, sentence, depth, role))
    positions.sort()

    pieces: list[str] = []
    placed: list[Placed] = []
    needle_tokens = 0
    last = 0
    for idx, (i, _order, sentence, depth, role) in enumerate(positions):
        pieces.extend(body[last:i])
        last = i
        prev = pieces[-1] if pieces else None
        nxt_needle = positions[idx + 1] if idx + 1 < len(positions) and positions[idx + 1][0] == i else None
        nxt = (" " + nxt_needle[2].strip()) if nxt_needle else (body[i] if i < len(body) else None)
        text = _boundary_format(sentence, prev, nxt)
        n = tok.count(text)
        offset = body_cum[i] + needle_tokens
        pieces.append(text)
        needle_tokens += n
        placed.append(Placed(text, depth, 0.0, offset, role))
    pieces.extend(body[last:])
    total = body_tokens + needle_tokens
    placed = [Placed(p.text, p.requested_depth, p.token_offset / total if total else 0.0, p.token_offset, p.role)
              for p in placed]
    return Document("".join(pieces), total, budget, tuple(placed), body_tokens, len(body))
