"""Benchmark: building a cell by splicing vs the naive re-encode, side by side.

The original NIAH harness (``LLMNeedleHaystackTester``) builds every cell by re-encoding
text over and over. Per cell it

1. ``read_context_files``: appends every file of its haystack folder to a string, then
   encodes the whole string to test ``while len(tokens) < max(context_lengths)``, and
   repeats — one full encode of the *growing* text per pass over the folder;
2. ``encode_and_trim``: encodes the whole text again, cuts it to the cell's length, decodes;
3. ``insert_needle``: encodes that context and the needle, cuts room for the needle, backs
   off from the depth to the previous sentence end (re-slicing the token list at each step),
   splices, decodes;
4. logs the final context's length by encoding it once more.

:func:`naive_build` does exactly that on the same haystack text and tokenizer (the folder
is the haystack's units grouped into files, ``pass_tokens`` tokens per pass).

ctxmem encodes the haystack once per (source, tokenizer) and builds each cell from prefix
sums (:func:`ctxmem.evals.haystack.build_document`). :func:`bench_cell_build` times both in
the same process, after the one-time encode, and reports each method's claimed length next
to a full re-encode of the text it built.

Run it with ``ctxmem eval bench --length 1m``, ``python -m benchmarks --suite bench_evals``
or ``python -m ctxmem.evals.bench``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ctxmem.errors import InputError
from ctxmem.evals.haystack import EncodedHaystack, build_document, encoded_haystack
from ctxmem.evals.sources import get_source
from ctxmem.tokens import EncodingTokenizer, get_tokenizer

NEEDLE = "The archive code assigned to the amber falcon is QX7-48213."
#: tokens of haystack text per pass of the naive harness over its folder of files
DEFAULT_PASS_TOKENS = 128_000
FILE_TOKENS = 4_000


@dataclass(frozen=True)
class NaiveCell:
    """What the naive harness built: the text, the length it logs, and how many full encodes."""

    text: str
    claimed_tokens: int  # the token list it assembled (what it takes the length to be)
    real_tokens: int  # the harness's own final encode of the text (what it logs)
    encodes: int  # whole-text encodes (source passes + trim + insert + final)
    encoded_tokens: int  # tokens encoded in total across those encodes


def corpus_files(haystack: EncodedHaystack, pass_tokens: int, file_tokens: int = FILE_TOKENS) -> list[str]:
    """The haystack's first ``pass_tokens`` tokens of units, grouped into ~``file_tokens`` files."""
    if pass_tokens <= 0 or file_tokens <= 0:
        raise InputError("pass_tokens and file_tokens must be positive", field="pass_tokens")
    haystack.ensure(pass_tokens)
    files: list[str] = []
    cur: list[str] = []
    cur_n = total = 0
    for unit, n in zip(haystack.units, haystack.counts, strict=False):
        if total >= pass_tokens:
            break
        cur.append(unit)
        cur_n += n
        total += n
        if cur_n >= file_tokens:
            files.append("".join(cur))
            cur, cur_n = [], 0
    if cur:
        files.append("".join(cur))
    return files


def naive_build(tok: EncodingTokenizer, files: Sequence[str], length: int, depth: float, *,
                max_length: int | None = None, needle: str = NEEDLE) -> NaiveCell:
    """The re-encode method, step for step as the original NIAH harness builds a cell.

    ``max_length`` is the largest length of the grid (the harness reads the folder until it
    holds that many tokens); it defaults to ``length``, the most favourable case.
    """
    if not files or not any(files):
        raise InputError("the naive harness needs at least one non-empty haystack file", field="files")
    if not 0.0 <= depth <= 1.0:
        raise InputError(f"depth {depth} is outside [0, 1]", field="depth")
    target = max(length, max_length or 0)
    encodes = encoded = 0
    # 1. read_context_files: one full encode of the growing text per pass over the folder
    context = ""
    while True:
        n = len(tok.encode(context))
        encodes += 1
        encoded += n
        if n >= target:
            break
        for f in files:
            context += f
    # 2. encode_and_trim
    ids = tok.encode(context)
    encodes += 1
    encoded += len(ids)
    context = tok.decode(ids[:length]) if len(ids) > length else context
    # 3. insert_needle
    needle_ids = tok.encode(" " + needle)
    context_ids = tok.encode(context)
    encodes += 1
    encoded += len(context_ids)
    if len(context_ids) + len(needle_ids) > length:
        context_ids = context_ids[: length - len(needle_ids)]
    at = int(len(context_ids) * depth)
    new_ids = context_ids[:at]
    period = tok.encode(".")
    while new_ids and new_ids[-1] not in period:
        at -= 1
        new_ids = context_ids[:at]
    assembled = new_ids + needle_ids + context_ids[at:]
    text = tok.decode(assembled)
    # 4. the harness logs the final context length in tokens
    final = len(tok.encode(text))
    encodes += 1
    encoded += final
    return NaiveCell(text, len(assembled), final, encodes, encoded)


def bench_cell_build(length: int = 1_000_000, *, tokenizer: str = "o200k_base", source: str = "prose",
                     repeats: int = 5, naive_repeats: int = 2, pass_tokens: int = DEFAULT_PASS_TOKENS,
                     max_length: int | None = None) -> dict[str, Any]:
    """Time one cell built by splicing and by the naive harness, same haystack and tokenizer."""
    if length <= 0:
        raise InputError("length must be a positive number of tokens", field="length")
    if repeats < 1 or naive_repeats < 1:
        raise InputError("repeats must be at least 1", field="repeats")
    tok = get_tokenizer(tokenizer)
    if not isinstance(tok, EncodingTokenizer):
        raise InputError(f"tokenizer {tokenizer!r} cannot encode and decode; the naive method needs both",
                         field="tokenizer")
    hay = encoded_haystack(get_source(source), tok)
    t0 = time.perf_counter()
    hay.ensure(max(length, pass_tokens) + 1)
    encode_s = time.perf_counter() - t0
    splice: list[float] = []
    doc = None
    for i in range(repeats):
        t = time.perf_counter()
        doc = build_document(hay, length, [(NEEDLE, (i + 1) / (repeats + 1), "needle")])
        splice.append(time.perf_counter() - t)
    assert doc is not None
    files = corpus_files(hay, min(pass_tokens, length + 1))
    naive: list[float] = []
    cell = None
    for i in range(naive_repeats):
        t = time.perf_counter()
        cell = naive_build(tok, files, length, (i + 1) / (naive_repeats + 1), max_length=max_length)
        naive.append(time.perf_counter() - t)
    assert cell is not None
    splice_s, naive_s = statistics.median(splice), statistics.median(naive)
    return {
        "tokenizer": tokenizer, "source": source, "length": length,
        "one_time_encode_s": round(encode_s, 3),
        "splice_ms_median": round(splice_s * 1000, 2),
        "naive_ms_median": round(naive_s * 1000, 1),
        "splice_s": splice_s, "naive_s": naive_s,
        "speedup": round(naive_s / splice_s, 1),
        "claimed_tokens": doc.tokens, "real_tokens": tok.count(doc.text),
        "naive_claimed_tokens": cell.claimed_tokens, "naive_real_tokens": tok.count(cell.text),
        "naive_encodes": cell.encodes, "naive_encoded_tokens": cell.encoded_tokens,
        "pass_tokens": min(pass_tokens, length + 1), "files": len(files),
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(bench_cell_build(), indent=2))
