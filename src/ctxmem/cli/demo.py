"""``ctxmem demo``: the main job on the embedded defaults, offline.

It records a bundled, deterministic million-token kernel-tuning session into the SQLite
store, summarizes it (events, tools, token accounting with content separate from
overhead, exact where the tokenizer is available, content-addressed storage, reload time,
an FTS lookup), then builds the next request's context under each shipped strategy preset
and shows what each keeps, masks, summarizes and drops. Everything runs offline.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ctxmem.cli._common import echo_json, json_option, open_db, table
from ctxmem.errors import TokenizerError
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.tokens import get_tokenizer

DEMO_PRESETS = ("dump-1m", "window-200k", "masking-200k", "summarize-128k", "pipeline-200k")


def _compare_presets(db_path: str, session_id: str, tokenizer: str, presets: tuple[str, ...]) -> list[dict[str, object]]:
    """Build the next context of the session with each preset; what each keeps and costs."""
    from ctxmem.config import load_preset
    from ctxmem.context import History
    from ctxmem.errors import CtxmemError
    from ctxmem.session import Session

    out: list[dict[str, object]] = []
    with open_db(db_path) as store:
        session = Session.open(store, session_id)
        history = History.from_session(session, tokenizer)
        for name in presets:
            try:
                builder = load_preset(name).builder(tokenizer=tokenizer)
                t0 = time.perf_counter()
                built = builder.build(history)
                ms = (time.perf_counter() - t0) * 1000
            except CtxmemError as exc:  # dump-1m: an honest overflow, never a silent cut
                out.append({"preset": name, "error": f"{type(exc).__name__}: {str(exc).split('. ')[0]}"})
                continue
            r = built.report
            out.append(
                {
                    "preset": name,
                    "tokens_out": r.tokens_out,
                    "kept": len(r.kept),
                    "masked": len(r.masked),
                    "summarized": len(r.summarized),
                    "dropped": len(r.dropped),
                    "build_ms": round(ms, 1),
                }
            )
    return out


def _pick_tokenizer(preferred: str) -> tuple[str, str | None, str | None]:
    """(tokenizer to count with, a one-line note when it is not ``preferred``, the full error)."""
    try:
        get_tokenizer(preferred)
        return preferred, None, None
    except TokenizerError as exc:
        detail = str(exc)
        if "TIKTOKEN_CACHE_DIR" in detail:
            why = "not cached, no network"
            fix = "set TIKTOKEN_CACHE_DIR to a folder holding its file, or run once online"
        else:
            why = detail.split(": ")[0].split(". ")[0][:100]
            fix = "pass --tokenizer with one that loads (--json shows the whole error)"
        note = f"{preferred} unavailable ({why}): counts are the heuristic, which over-counts; {fix}."
        return "heuristic", note, detail


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db_path", default="ctxmem-demo.db", show_default=True, type=click.Path(dir_okay=False),
              help="Session store (SQLite file) the demo records into.")
@click.option("--turns", default=1200, show_default=True, type=click.IntRange(1, 100_000), help="Agent turns.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--output-scale", default=1.16, show_default=True, type=click.FloatRange(0.05, 10), help="Tool-output size factor."
)
@click.option("--tokenizer", default="o200k_base", show_default=True)
@json_option
def demo(db_path: str, turns: int, seed: int, output_scale: float, tokenizer: str, as_json: bool) -> None:
    """Record and summarize a bundled million-token agent session (offline)."""
    tok, note, tokenizer_error = _pick_tokenizer(tokenizer)
    msgs = synthetic_session(turns, seed, output_scale=output_scale)
    data = "\n".join(json.dumps(m, ensure_ascii=False) for m in to_anthropic(msgs)).encode()
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    with open_db(db_path) as store:
        t0 = time.perf_counter()
        session = import_jsonl(store, data, source=f"synthetic(turns={turns}, seed={seed})", tokenizers=[tok],
                               title=f"demo kernel session seed={seed}")
        ingest_s = time.perf_counter() - t0
    with open_db(db_path) as store:
        t0 = time.perf_counter()
        view = store.chain(session.id, tokenizers=[tok])
        reload_s = time.perf_counter() - t0
        totals = store.totals(session.id, tok)
        hits = store.search("OutOfResources", session_id=session.id, limit=3)
        blobs = store.blob_count()
    tool_results = sum(1 for se in view.events if se.kind == "tool_result")
    summary = {
        "db": db_path,
        "session": session.id,
        "turns": turns,
        "seed": seed,
        "output_scale": output_scale,
        "messages": len(msgs),
        "events": len(view.events),
        "tool_results": tool_results,
        "distinct_blobs": blobs,
        "tokenizer": tok,
        "content_tokens": totals.content,
        "overhead_tokens": totals.overhead,
        "total_tokens": totals.total,
        "ingest_seconds": round(ingest_s, 3),
        "reload_seconds": round(reload_s, 4),
        "fts_hits_OutOfResources": len(hits),
        "note": note,
        "tokenizer_error": tokenizer_error,
    }
    strategies = _compare_presets(db_path, session.id, tok, DEMO_PRESETS)
    summary["strategies"] = strategies
    if as_json:
        echo_json(summary)
        return
    notes = ("note", "tokenizer_error", "strategies")
    rows = [[k, v] for k, v in summary.items() if v is not None and k not in notes]
    click.echo(table(rows, ["demo", "value"]))
    if note:  # one short line under the table, not a 400-character cell
        click.echo(f"note: {note}")
    click.echo("\nThe next request's context under each preset (ctxmem context build --preset NAME):")
    click.echo(
        table(
            [
                [s["preset"], s["tokens_out"], s["kept"], s["masked"], s["summarized"], s["dropped"], s["build_ms"]]
                if "error" not in s
                else [s["preset"], "refused", "", "", "", "", ""]
                for s in strategies
            ],
            ["preset", "tokens", "kept", "masked", "summarized", "dropped", "first build ms"],
        )
    )
    for s in strategies:
        if "error" in s:
            click.echo(f"{s['preset']}: {s['error']} (it never cuts silently)")
    click.echo(
        "(a first build indexes the whole session; later turns extend it, and a build given the session "
        "saves the index in its store for the next process: see `python -m benchmarks`)"
    )
    if hits:
        click.echo(f"\nfirst FTS hit (event {hits[0].event_id}, {hits[0].tool_name}): {hits[0].snippet.replace(chr(10), ' ')}")
    click.echo(f"\nExplore it: ctxmem sessions show {session.id} --db {db_path}")
