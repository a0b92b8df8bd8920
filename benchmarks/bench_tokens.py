"""Tokens suite: exact counting speed, and counting time that stays linear on pathological output.

Rows, each measured in one process, alternating ctxmem and its peer run by run:

* **pathological run vs prose** — ``get_tokenizer("o200k_base").count`` on one character
  repeated for 20 MB (``-``, the slowest run for quicktok's engine; ``a``; spaces) against
  the same call on 20 MB of prose-like session text. Issue 11's target: ≤ 2×. Long runs
  are shortened before the engine (``ctxmem/tokens/runs.py``, exactness argued there and
  fuzzed in ``tests/tokens/test_runs.py``); the note gives what the engine alone costs on
  1 MB of the same run, which is what a count without the shortening would pay per MB.
  The timed calls are warm: the one-time period check of a character (first long run of
  it in the process) is reported in the note.
* **the tiktoken engine on the same run** — the reference engine (``tiktoken:o200k_base``)
  also shortens runs; its unshortened merge loop is quadratic in a run's length.
* **exact count of the 1M-token session** — ctxmem's default o200k tokenizer (quicktok,
  C++, offline) against tiktoken's ``encode_ordinary`` over the same 4,800 texts: the
  exact-counting floor every ingest pays.

tiktoken rows need tiktoken's o200k file (``TIKTOKEN_CACHE_DIR`` or the network); without
it they are left out and the run says so on stderr.
"""

from __future__ import annotations

import functools
import sys
import time

from benchmarks._harness import Row, timed
from ctxmem.messages import message_texts
from ctxmem.samples import synthetic_session
from ctxmem.tokens import get_tokenizer

SUITE = "tokens"


def _prose(size: int) -> str:
    """Session text (tool outputs, code, prose) repeated to ``size`` characters."""
    msgs = synthetic_session(300, seed=11)
    base = "\n".join(t for m in msgs for t in message_texts(m))
    return (base * (size // len(base) + 1))[:size]


def _alternating(a: object, b: object, repeat: int) -> tuple[float, float]:
    """Medians of two callables timed alternately (load on a shared machine hits both)."""
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(repeat):
        ta.append(timed(a, repeat=1))  # type: ignore[arg-type]
        tb.append(timed(b, repeat=1))  # type: ignore[arg-type]
    ta.sort()
    tb.sort()
    return ta[len(ta) // 2], tb[len(tb) // 2]


def _tiktoken() -> object | None:
    try:
        import tiktoken

        return tiktoken.get_encoding("o200k_base")
    except Exception as exc:  # no file, no network
        print(f"bench_tokens: tiktoken o200k unavailable, its rows are left out ({type(exc).__name__})", file=sys.stderr)
        return None


def run(quick: bool = False) -> list[Row]:
    size = 1_000_000 if quick else 20_000_000
    repeat = 3 if quick else 5
    tok = get_tokenizer("o200k_base")
    engine = getattr(tok, "_enc", None)
    prose = _prose(size)
    rows: list[Row] = []
    for c in ("-", "a", " "):
        run_text = c * size
        t0 = time.perf_counter()
        first = tok.count(run_text)
        cold = time.perf_counter() - t0
        t_run, t_prose = _alternating(lambda t=run_text: tok.count(t), lambda: tok.count(prose), repeat)
        raw_note = ""
        if engine is not None and hasattr(engine, "count"):
            raw = timed(functools.partial(engine.count, c * 1_000_000), repeat=1)
            raw_note = f"; engine alone on 1 MB of it: {raw * 1000:.0f} ms"
        rows.append(
            Row(
                SUITE,
                f"count {size / 1e6:g} MB of {c!r} (one run) vs the same size of prose",
                t_run,
                f"prose ({type(tok).__name__})",
                t_prose,
                "s",
                target="≤ 2×",
                note=f"{first:,} tokens; first call {cold * 1000:.0f} ms (period check){raw_note}",
            )
        )
    enc = _tiktoken()
    if enc is not None:
        ref = get_tokenizer("tiktoken:o200k_base")
        small = 2_000_000 if not quick else 500_000
        run_text, prose_small = "-" * small, prose[:small]
        ref.count(run_text)
        t_run, t_prose = _alternating(lambda: ref.count(run_text), lambda: ref.count(prose_small), repeat)
        rows.append(
            Row(
                SUITE,
                f"tiktoken engine: {small / 1e6:g} MB of '-' vs prose",
                t_run,
                "prose (tiktoken)",
                t_prose,
                "s",
                target="≤ 2×",
                note="the reference engine behind the same run shortening",
            )
        )
        msgs = synthetic_session(300 if quick else 1200, seed=7, output_scale=1.16)
        texts = [t for m in msgs for t in message_texts(m)]
        encode = enc.encode_ordinary  # type: ignore[attr-defined]
        t_ctx, t_tt = _alternating(lambda: tok.count_many(texts), lambda: [encode(t) for t in texts], repeat)
        total = sum(tok.count_many(texts))
        assert total == sum(len(encode(t)) for t in texts), "quicktok and tiktoken disagree"
        rows.append(
            Row(
                SUITE,
                f"exact o200k count of the session ({len(texts):,} texts, {total / 1e6:.2f}M tokens)",
                t_ctx,
                "tiktoken encode_ordinary",
                t_tt,
                "s",
                note=f"same total ({total:,}); ctxmem's default engine: {type(tok).__name__}",
            )
        )
    return rows


if __name__ == "__main__":
    from benchmarks._harness import fmt

    for r in run(quick="--quick" in sys.argv):
        print(f"{r.metric}: {fmt(r.ctxmem, r.unit)} vs {r.peer_name} {fmt(r.peer, r.unit)} = {r.ratio:.2f}x  {r.note}")
