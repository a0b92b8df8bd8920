"""Benchmark: building a cell by splicing vs the naive re-encode, side by side.

The original NIAH harness builds every cell by re-encoding the whole context (insert the
needle into the text, encode, trim to the length, decode). ctxmem encodes the haystack
once per (source, tokenizer) and builds each cell from prefix sums
(:func:`ctxmem.evals.haystack.build_document`). :func:`bench_cell_build` times both on
the same haystack and tokenizer in the same process, after the one-time encode, and
checks that the spliced document's claimed length is its real length.

Run it with ``ctxmem eval bench --length 1m`` (or ``python -m ctxmem.evals.bench``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from ctxmem.evals.haystack import build_document, encoded_haystack
from ctxmem.evals.sources import get_source
from ctxmem.tokens import EncodingTokenizer, get_tokenizer

NEEDLE = "The archive code assigned to the amber falcon is QX7-48213."


def naive_build(tok: EncodingTokenizer, haystack_text: str, length: int, depth: float) -> str:
    """The re-encode method, step for step as the original NIAH harness builds a cell.

    1. ``encode_and_trim``: encode the whole haystack text, cut to ``length``, decode;
    2. ``insert_needle``: encode that context again and the needle, cut room for the
       needle, back off from the depth to the previous sentence end (re-slicing the token
       list at each step, as the harness does), splice, decode;
    3. the harness then measures the final context by encoding it once more.

    Conservative: the original also re-reads and re-encodes its growing source text per
    cell before step 1 (several more full encodes at 1M tokens); that is not counted here.
    """
    ids = tok.encode(haystack_text)
    context = tok.decode(ids[:length]) if len(ids) > length else haystack_text
    needle_ids = tok.encode(" " + NEEDLE)
    context_ids = tok.encode(context)
    if len(context_ids) + len(needle_ids) > length:
        context_ids = context_ids[: length - len(needle_ids)]
    at = int(len(context_ids) * depth)
    new_ids = context_ids[:at]
    period = tok.encode(".")
    while new_ids and new_ids[-1] not in period:
        at -= 1
        new_ids = context_ids[:at]
    text = tok.decode(new_ids + needle_ids + context_ids[at:])
    tok.encode(text)  # the harness logs the final context length in tokens
    return text


def bench_cell_build(length: int = 1_000_000, *, tokenizer: str = "o200k_base", source: str = "prose",
                     repeats: int = 5, naive_repeats: int = 2) -> dict[str, Any]:
    tok = get_tokenizer(tokenizer)
    assert isinstance(tok, EncodingTokenizer)
    hay = encoded_haystack(get_source(source), tok)
    t0 = time.perf_counter()
    hay.ensure(length + 1)
    encode_s = time.perf_counter() - t0
    splice: list[float] = []
    doc = None
    for i in range(repeats):
        t = time.perf_counter()
        doc = build_document(hay, length, [(NEEDLE, (i + 1) / (repeats + 1), "needle")])
        splice.append(time.perf_counter() - t)
    assert doc is not None
    text = "".join(hay.units[: doc.units_used + 2])
    naive: list[float] = []
    for i in range(naive_repeats):
        t = time.perf_counter()
        naive_build(tok, text, length, (i + 1) / (naive_repeats + 1))
        naive.append(time.perf_counter() - t)
    real = tok.count(doc.text)
    return {
        "tokenizer": tokenizer, "source": source, "length": length,
        "one_time_encode_s": round(encode_s, 3),
        "splice_ms_median": round(statistics.median(splice) * 1000, 2),
        "naive_ms_median": round(statistics.median(naive) * 1000, 1),
        "speedup": round(statistics.median(naive) / statistics.median(splice), 1),
        "claimed_tokens": doc.tokens, "real_tokens": real,
    }


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(bench_cell_build(), indent=2))
