"""Evals suite: building one NIAH cell after the one-time encode vs the original harness.

* **ctxmem** — :func:`ctxmem.evals.haystack.build_document`: the haystack is encoded once
  per (source, tokenizer); a cell is a bisect on prefix sums, one partial unit and the
  needle's encode.
* **naive** — :func:`ctxmem.evals.bench.naive_build`, step for step what the original
  NIAH harness does per cell: re-read the haystack folder with a full encode of the
  growing text per pass, encode and trim, encode again to insert the needle, encode the
  result to log its length.

Both build the same length from the same haystack text and tokenizer in this process;
the one-time encode is reported in the note, not in either time. Each row's note also
gives both methods' claimed length next to a full re-encode of the text they built.
"""

from __future__ import annotations

from benchmarks._harness import Row
from ctxmem.evals.bench import bench_cell_build


def run(quick: bool = False) -> list[Row]:
    length = 32_000 if quick else 1_000_000
    pass_tokens = 8_000 if quick else 128_000
    r = bench_cell_build(length, tokenizer="o200k_base", source="prose", repeats=5 if quick else 7,
                         naive_repeats=2, pass_tokens=pass_tokens)
    label = f"{length // 1000}k" if length < 1_000_000 else f"{length // 1_000_000}M"
    note = (f"one-time encode {r['one_time_encode_s']} s; claimed/re-encoded tokens: ctxmem "
            f"{r['claimed_tokens']:,}/{r['real_tokens']:,}, naive {r['naive_claimed_tokens']:,}/"
            f"{r['naive_real_tokens']:,} ({r['naive_encodes']} full encodes, {r['naive_encoded_tokens']:,} tokens)")
    return [Row("evals", f"build one {label}-token NIAH cell (prose, o200k)", r["splice_s"],
                "naive re-encode (original NIAH harness)", r["naive_s"], "s", "≤ 30 ms, ≥ 50× faster", note=note)]
