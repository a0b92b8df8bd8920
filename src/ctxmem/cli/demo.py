"""``ctxmem demo``: the main job on the embedded defaults, offline.

Today it records a bundled, deterministic million-token kernel-tuning session into the
SQLite store, then summarizes it: events, tools, token accounting (content vs overhead,
exact where the tokenizer is available), content-addressed storage, reload time and an FTS
lookup. It grows as the strategies, the workload and the evaluator land.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ctxmem.cli._common import echo_json, json_option, table
from ctxmem.errors import TokenizerError
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import get_tokenizer


def _pick_tokenizer(preferred: str) -> tuple[str, str | None]:
    try:
        get_tokenizer(preferred)
        return preferred, None
    except TokenizerError as exc:
        return "heuristic", f"{preferred} unavailable ({str(exc).split('. ')[0]}); using the heuristic estimate"


@click.command()
@click.option("--db", "db_path", default="ctxmem-demo.db", show_default=True, type=click.Path(dir_okay=False))
@click.option("--turns", default=1200, show_default=True, type=click.IntRange(1, 100_000), help="Agent turns.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--tokenizer", default="o200k_base", show_default=True)
@json_option
def demo(db_path: str, turns: int, seed: int, tokenizer: str, as_json: bool) -> None:
    """Record and summarize a bundled million-token agent session (offline)."""
    tok, note = _pick_tokenizer(tokenizer)
    if note and not as_json:
        click.echo(f"note: {note}", err=True)
    msgs = synthetic_session(turns, seed)
    data = "\n".join(json.dumps(m, ensure_ascii=False) for m in to_anthropic(msgs)).encode()
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    with SQLiteStore(db_path) as store:
        t0 = time.perf_counter()
        session = import_jsonl(store, data, source=f"synthetic(turns={turns}, seed={seed})", tokenizers=[tok],
                               title=f"demo kernel session seed={seed}")
        ingest_s = time.perf_counter() - t0
    with SQLiteStore(db_path) as store:
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
    }
    if as_json:
        echo_json(summary)
        return
    rows = [[k, v] for k, v in summary.items() if v is not None]
    click.echo(table(rows, ["demo", "value"]))
    if hits:
        click.echo(f"\nfirst FTS hit (event {hits[0].event_id}, {hits[0].tool_name}): {hits[0].snippet.replace(chr(10), ' ')}")
    click.echo(f"\nExplore it: ctxmem sessions show {session.id} --db {db_path}")
