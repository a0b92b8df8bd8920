"""``ctxmem eval``: needle-in-a-haystack grids over models and context strategies.

Commands:

* ``eval run`` — the general grid (every axis a comma list), results and report under
  ``--out DIR`` (or a ``--results FILE``);
* ``eval niah`` — the classic model grid, everything under ``--out DIR``
  (``DIR/results.db`` + the report);
* ``eval session-needles`` — needles inside tool results of an agent session (a recorded
  ``--session``, a ``--jsonl`` transcript, or ``--workload NAME [--set K=V …]``: one run of
  any registered workload recorded under ``--out``, with the ``natural`` needle family
  asking about facts of its own tool results) across presets;
* ``eval report`` — PNGs + ``index.html`` from a results database (or a ``--out`` folder);
* ``eval show`` — per-group accuracy, effective lengths and run history (``--json``).

Before a run the cost estimate is printed; ``--max-cost`` caps spending; ``--dry-run``
stops after the estimate and lists the cells that will be refused (each is built, no
reader is called). A rerun with the same arguments skips finished and refused cells and
retries errored ones. Progress goes to stderr.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from ctxmem.cli._common import CtxmemGroup, echo_json, json_option, table
from ctxmem.cli._options import (
    TOKEN_LIST,
    TOKENS,
    model_option,
    preset_option,
    split_multi,
    utf8_text,
)
from ctxmem.errors import ConfigError


def default_eval_db() -> str:
    return os.environ.get("CTXMEM_EVAL_DB") or "ctxmem-eval.db"


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError("needs at least one value", field="axis")
    return items


def _seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in _csv(text):
        a, sep, b = part.partition("-")
        try:
            lo, hi = int(a), int(b) if sep else int(a)
        except ValueError:
            raise ConfigError(f"bad seeds {text!r}: use 0,1,2 or 0-9", field="seeds") from None
        if hi < lo:  # a reversed range would run no cell at all
            raise ConfigError(f"bad seeds {text!r}: the range {part!r} runs backwards (no seed in it); "
                              f"write it low-high, e.g. {hi}-{lo}", field="seeds")
        out.extend(range(lo, hi + 1))
    return out


def _prices(items: tuple[str, ...]) -> dict[str, Any]:
    from ctxmem.evals.runner import ModelPrice

    out = {}
    for item in items:
        name, _, rest = item.partition("=")
        try:
            values = [float(x) for x in rest.split(",")]
            if not name or not 2 <= len(values) <= 4 or any(v < 0 for v in values):
                raise ValueError
        except ValueError:
            raise ConfigError(f"bad price {item!r}: use MODEL=INPUT,OUTPUT[,CACHE_READ[,CACHE_WRITE]] in $ per "
                              "million tokens", field="price") from None
        inp, out_, *cache = values
        # cached prompt tokens bill at the cache prices given, else at the input price
        out[name] = ModelPrice(inp, out_, cache[0] if cache else None, cache[1] if len(cache) > 1 else None)
    return out


class _Bar:
    """A dependency-free progress bar on stderr (silent when stderr is not a terminal and quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.counts: dict[str, int] = {}

    def __call__(self, done: int, total: int, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(1, total))
        detail = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {detail}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _common_run_options(fn: Any) -> Any:
    opts = [
        click.option("--depths", default="0,0.25,0.5,0.75,1", show_default=True,
                     help="Needle depths: fractions (0,0.5,1) or percents (0,50,100)."),
        click.option("--needles", default="literal", show_default=True,
                     help="Needle families: literal, multikey, multivalue, nonliteral, absent, nocontext."),
        click.option("--seeds", default="0", show_default=True, help="Seeds (trials per cell): 0,1,2 or 0-9."),
        click.option("--tokenizer", default="o200k_base", show_default=True,
                     help="Tokenizer that measures length (o200k_base, cl100k_base, hf:PATH…)."),
        click.option("--window", type=TOKENS, default=None,
                     help="The model's context window in tokens, e.g. 128k (known models have a default)."),
        click.option("--max-tokens", type=TOKENS, default=64, show_default=True,
                     help="Output tokens reserved for the answer."),
        click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                     help="Requests in flight at once."),
        click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="At most this many requests per second."),
        click.option("--max-cost", "max_cost", type=click.FloatRange(min=0), default=None,
                     help="Stop before spending more dollars."),
        click.option("--price", "price_items", multiple=True,
                     help="MODEL=INPUT,OUTPUT[,CACHE_READ[,CACHE_WRITE]] dollars per million tokens (overrides "
                          "ctxmem's price table; cached prompt tokens bill at the input price unless given)."),
        click.option("--judge", default=None, help="Also grade answers with this model (client spec)."),
        click.option("--dry-run", is_flag=True, help="Print the plan and cost estimate, run nothing."),
        click.option("--progress/--no-progress", default=True, help="Progress bar on stderr."),
        json_option,
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _execute(
    *, sources: list[str], lengths: list[int], depths: str, needles: str, presets: list[str], models: list[str],
    seeds: str, tokenizer: str, window: int | None, max_tokens: int, db: str, report: str | None,
    concurrency: int, rate: float | None, max_cost: float | None, price_items: tuple[str, ...],
    judge: str | None, dry_run: bool, progress: bool, as_json: bool,
) -> None:
    from ctxmem.evals.grid import expand, parse_depths
    from ctxmem.evals.readers import get_reader
    from ctxmem.evals.runner import judge_model, plan, run_sync
    from ctxmem.evals.scoring import LLMJudge
    from ctxmem.evals.store import open_results
    from ctxmem.tokens import get_tokenizer

    get_tokenizer(tokenizer)  # an unknown tokenizer fails here, before anything else
    cells = expand(
        sources=sources, lengths=list(lengths), depths=parse_depths(depths), needles=_csv(needles),
        presets=presets, models=models, seeds=_seeds(seeds), tokenizer=tokenizer, window=window,
        max_tokens=max_tokens,
    )
    prices = _prices(price_items)
    _preflight([*models, *([judge] if judge else [])])  # a bad reader fails here, before any cell is priced
    grid = {"sources": sources, "lengths": ",".join(str(n) for n in lengths), "depths": depths, "needles": needles, "presets": presets,
            "models": models, "seeds": seeds, "tokenizer": tokenizer, "window": window}
    judge_obj = LLMJudge(get_reader(judge)) if judge else None
    judge_name = judge_model(judge_obj)
    with open_results(db) as store:
        pending, skipped, est = plan(cells, store, prices, judge=judge_name)
        will: list[Any] = []
        if dry_run:
            from ctxmem.evals.runner import estimate
            from ctxmem.evals.runner import refusals as find_refusals

            will = find_refusals(pending)
            refused_ids = {id(c) for c, _ in will}
            est = estimate([c for _, c, _ in pending if id(c) not in refused_ids], prices,  # refused cells cost nothing
                           judge=judge_name)
        if not as_json or dry_run:
            msg = (f"{len(cells)} cells: {skipped} already finished, {len(pending)} to run; estimated "
                   f"{est.prompt_tokens:,} prompt + {est.output_tokens:,} output tokens, ${est.dollars:.4f}"
                   + (f" (unpriced: {', '.join(est.unpriced)})" if est.unpriced else ""))
            if max_cost is not None:
                msg += f"; cost cap ${max_cost:.2f}"
            click.echo(msg, err=as_json)
        if dry_run:
            if as_json:
                echo_json({"cells": len(cells), "skipped": skipped, "pending": len(pending), "estimate": est.to_json(),
                           "will_refuse": [{"cell": c.to_json(), "reason": why} for c, why in will]})
            else:
                click.echo(f"{len(will)} of the {len(pending)} cells to run will be refused"
                           + (":" if will else ""))
                for c, why in will[:10]:
                    click.echo(f"  will refuse {c.source} {c.length} depth={c.depth} {c.needle} {c.preset}: {why}")
            return
        bar = _Bar(progress and sys.stderr.isatty())
        summary = run_sync(cells, get_reader, store, concurrency=concurrency, rate=rate, budget_usd=max_cost,
                           prices=prices, judge=judge_obj, progress=bar, grid=grid)
        from ctxmem.store.postgres import redact

        out: dict[str, Any] = {"db": redact(str(db)), **summary.to_json()}
        refusals = [r["error"] for r in store.rows(status="refused") if r["run_id"] == summary.run_id]
        out["refusals"] = refusals
        if report:
            from ctxmem.evals.report import write_report

            rows = store.rows()
            if any(r["status"] == "done" for r in rows):
                out["report"] = str(write_report(rows, report))
    if as_json:
        echo_json(out)
        return
    click.echo(f"run {summary.run_id[:8]}: {summary.done} done, {summary.refused} refused, {summary.errors} errors, "
               f"{summary.skipped} skipped (finished earlier), {summary.cached} answers from cache, "
               f"${summary.dollars:.4f} spent" + (" — stopped at the cost cap (--max-cost)" if summary.stopped_by_budget else ""))
    for m in out["refusals"][:3]:
        click.echo(f"refused: {m}", err=True)
    for m in summary.error_messages[:5]:
        click.echo(f"error: {m}", err=True)
    if out.get("report"):
        click.echo(f"report: {out['report']}")
    if summary.errors:
        sys.exit(1)


def _preflight(specs: list[str]) -> None:
    """Build every reader once before the grid starts: an unknown spec, a model name without
    a provider or a missing API key is one clear error now, not a failure in every cell."""
    from ctxmem.errors import InputError, UnknownNameError
    from ctxmem.evals.readers import READERS, get_reader

    for spec in dict.fromkeys(specs):
        try:
            reader = get_reader(spec)
        except UnknownNameError:
            if ":" not in spec and spec not in READERS:
                raise InputError(
                    f"model {spec!r} names no provider: write it as PROVIDER:MODEL, e.g. openai:{spec} or "
                    f"anthropic:{spec}; offline readers: {', '.join(READERS)}", field="model") from None
            raise
        if getattr(reader, "api_key", "set") is None:
            env = "ANTHROPIC_API_KEY" if spec.startswith("anthropic:") else "OPENAI_API_KEY"
            raise InputError(f"no API key for {spec!r}: set {env} (or use an offline reader: "
                             f"{', '.join(READERS)})", field="model")


@click.group("eval", cls=CtxmemGroup)
def eval_group() -> None:
    """Needle-in-a-haystack evaluation of models and context strategies."""


@eval_group.command("run")
@click.option("--source", "--sources", "sources", multiple=True, default=("prose",), show_default=True,
              help="Haystacks (repeatable; a comma list works too): prose, code, log, folder:PATH, session:JSONL|DB#ID "
                   "(as text), agent (synthetic tool-heavy session), agent:JSONL|DB#ID (needles in its tool results).")
@click.option("--lengths", type=TOKEN_LIST, default="4k,16k,64k", show_default=True,
              help="Lengths in tokens: 1k,4k,128k,1M.")
@preset_option(("none",), help="Strategy preset (repeatable; a comma list works too), or none for the raw context.")
@model_option(("extractive",))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for results.db and the report (as eval niah).")
@click.option("--results", default=None, type=click.Path(dir_okay=False),
              help="Results database: a file, or a postgresql:// URL several workers share (each cell runs once) "
                   "[default: OUT/results.db, else $CTXMEM_EVAL_DB or ./ctxmem-eval.db].")
@_common_run_options
def run_cmd(sources: tuple[str, ...], lengths: list[int], presets: tuple[str, ...], models: tuple[str, ...],
            out_dir: str | None, results: str | None, **kw: Any) -> None:
    """Run a grid: sources × lengths × depths × needles × presets × models × seeds."""
    db = results or (str(Path(out_dir) / "results.db") if out_dir else default_eval_db())
    _execute(sources=split_multi(sources), lengths=lengths, presets=split_multi(presets), models=split_multi(models),
             db=db, report=out_dir, **kw)


@eval_group.command("niah")
@model_option(("extractive",))
@click.option("--source", "--sources", "sources", multiple=True, default=("prose",), show_default=True,
              help="Haystack source (repeatable; a comma list works too): prose, code, log, folder:PATH, session:JSONL.")
@click.option("--lengths", type=TOKEN_LIST, default="1k,2k,4k,8k,16k,32k,64k,128k", show_default=True,
              help="Lengths in tokens.")
@preset_option(("none",), help="Strategy preset (repeatable; a comma list works too), or none.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for results.db and the report.")
@_common_run_options
def niah_cmd(models: tuple[str, ...], sources: tuple[str, ...], lengths: list[int], presets: tuple[str, ...],
             out_dir: str, **kw: Any) -> None:
    """The classic length × depth grid; results and report under --out."""
    _execute(sources=split_multi(sources), lengths=lengths, presets=split_multi(presets),
             models=split_multi(models), db=str(Path(out_dir) / "results.db"), report=out_dir, **kw)


@eval_group.command("session-needles")
@click.option("--session", "session_id", default=None, callback=utf8_text("session"),
              help="A recorded session id (in --sessions-db).")
@click.option("--store", "--db", "sessions_db", default=None, type=click.Path(dir_okay=False),
              help="Session store holding --session: a URL (postgresql://user@host/db, sqlite:///file.db) or a "
                   "SQLite file path (--db) [default: $CTXMEM_STORE, $CTXMEM_DB or ~/.local/share/ctxmem/sessions.db].")
@click.option("--jsonl", default=None, type=click.Path(dir_okay=False, exists=True), help="A JSONL transcript.")
@click.option("--workload", default=None,
              help="Record a session of this registered workload (kernel, synthetic or a plugin; `ctxmem workload "
                   "list`), once under --out, and ask about it.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A workload setting (repeatable), e.g. --set scale=full (kernel), --set turns=600 (synthetic).")
@click.option("--workload-seed", type=int, default=0, show_default=True, help="Seed of the recorded workload run.")
@click.option("--lengths", type=TOKEN_LIST, default=None,
              help="Session lengths in tokens [default: 8k,16k,32k,64k; for a workload, the three largest of "
                   "8k, 16k, … 512k that its session holds].")
@preset_option(("dump-1m", "window-32k", "masking-turns-128k"))
@model_option(("extractive",))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for results.db and the report.")
@_common_run_options
def session_needles_cmd(session_id: str | None, sessions_db: str | None, jsonl: str | None, workload: str | None,
                        settings: tuple[str, ...], workload_seed: int, lengths: list[int] | None,
                        presets: tuple[str, ...], models: tuple[str, ...], out_dir: str, **kw: Any) -> None:
    """Needles inside tool results of an agent session, placed by tool-call index, across strategies.

    With --workload, the needle families default to literal,natural when the workload
    declares natural needles: planted literal needles, and facts of the run's own tool
    results (for the kernel workload: shared-memory limit, device, tolerances, …) chosen by
    tool-call index.
    """
    chosen = [x for x in (session_id, jsonl, workload) if x]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --session, --jsonl or --workload")
    presets = tuple(split_multi(presets))
    models = tuple(split_multi(models))
    default_lengths = [8_000, 16_000, 32_000, 64_000]
    if session_id:
        from ctxmem.cli._common import default_db, open_existing_store, resolve_session_id

        db_path = sessions_db or default_db()
        with open_existing_store(db_path) as store:  # `latest` and id prefixes, as every --session
            session_id = resolve_session_id(store, session_id)
        source = f"agent:{db_path}#{session_id}"
    elif jsonl:
        source = f"agent:{jsonl}"
    elif workload:
        from ctxmem.config import load_preset
        from ctxmem.workloads import get_workload, parse_settings

        parsed = parse_settings(settings)
        wl = get_workload(workload, parsed)
        wl.check()
        for p in presets:  # a bad name fails before the recording, not after it
            if p != "none":
                load_preset(p)
        source, tokens = _workload_session(Path(out_dir), workload, wl, workload_seed, parsed,
                                           progress=kw["progress"] and sys.stderr.isatty())
        fitting = [n for n in (8, 16, 32, 64, 128, 256, 512) if n * 1000 <= 0.95 * tokens] or [8]
        default_lengths = [n * 1000 for n in fitting[-3:]]
        if wl.needles() and (click.get_current_context().get_parameter_source("needles")
                             == click.core.ParameterSource.DEFAULT):
            kw["needles"] = "literal,natural"
    else:
        source = "agent"
    _execute(sources=[source], lengths=lengths or default_lengths, presets=list(presets), models=list(models),
             db=str(Path(out_dir) / "results.db"), report=out_dir, **kw)


def _workload_session(out_dir: Path, name: str, wl: Any, seed: int, settings: dict[str, str], *,
                      progress: bool) -> tuple[str, int]:
    """(``agent:DB#ID``, history tokens) of one recorded run of workload ``name`` in its default
    mode, recorded once under ``out_dir``.

    A run is deterministic for (workload, settings, seed), so a database already holding it
    is reused; a rerun of the same grid then resumes instead of recording again.
    """
    import hashlib

    from ctxmem.messages import canonical_json
    from ctxmem.session import Session
    from ctxmem.store import SQLiteStore

    out_dir.mkdir(parents=True, exist_ok=True)
    tag = hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:8] if settings else "default"
    db = out_dir / f"{name}-seed{seed}-{tag}.db"
    with SQLiteStore(str(db)) as store:
        found = [s for s in store.list_sessions() if s.metadata.get("workload") == name]
        if found:
            sid = found[0].id
            tokens = Session.open(store, sid).totals("o200k_base").content
            return f"agent:{db}#{sid}", tokens
        click.echo(f"recording a {name} workload run (seed {seed}) into {db} …", err=True)

        def bar(done: int, total: int) -> None:
            if progress:
                sys.stderr.write(f"\r  {done}/{total}")
                sys.stderr.flush()

        run = wl.run(store, seed=seed, progress=bar)
        if progress:
            sys.stderr.write("\n")
        recorded = Session.open(store, run.session_id).info.metadata.get("workload")
        if recorded != name:
            # without it the cells would ask about every registered workload's needles, and a
            # rerun would record again instead of resuming
            raise ConfigError(
                f"workload {name!r} recorded session {run.session_id} with metadata workload={recorded!r}: its run() "
                f"must create the session with metadata={{'workload': {name!r}}} (its registry name), which is how "
                "eval session-needles finds its needles and resumes", field="workload")
        click.echo(f"  {run.history_tokens:,} tokens (session {run.session_id})", err=True)
        return f"agent:{db}#{run.session_id}", run.history_tokens


@eval_group.command("report")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--results", "db", default=None, type=click.Path(dir_okay=False),
              help="Results database file or postgresql:// URL (default: DIRECTORY/results.db).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Where to write the report (default: DIRECTORY).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for effective-length intervals.")
def report_cmd(directory: str | None, db: str | None, out_dir: str | None, n_boot: int) -> None:
    """Write PNG figures and a self-contained index.html from a results database."""
    from ctxmem.evals.report import write_report
    from ctxmem.evals.store import open_results

    if db is None:
        if directory is None:
            raise click.UsageError("give DIRECTORY (holding results.db) or --results FILE")
        db = str(Path(directory) / "results.db")
    if not _results_exist(db):
        raise ConfigError(f"no results database {db}; pass --results FILE", field="results")
    out = out_dir or directory
    if out is None:
        raise click.UsageError("give --out DIR (or DIRECTORY)")
    with open_results(db) as store:
        index = write_report(store.rows(), out, n_boot=n_boot)
    click.echo(f"report: {index}")


@eval_group.command("show")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--results", "db", default=None, type=click.Path(dir_okay=False),
              help="Results database file (default: DIRECTORY/results.db, else $CTXMEM_EVAL_DB or ./ctxmem-eval.db).")
@click.option("--by", default="model,preset,source,needle,length", show_default=True, help="Group accuracy by these.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True)
@json_option
def show_cmd(directory: str | None, db: str | None, by: str, n_boot: int, as_json: bool) -> None:
    """Accuracy per group (Wilson intervals), effective lengths, refused/errored cells."""
    from ctxmem.evals.analysis import cell_table, effective_lengths
    from ctxmem.evals.store import open_results

    path = db or (str(Path(directory) / "results.db") if directory else default_eval_db())
    if not _results_exist(path):
        raise ConfigError(f"no results database {path}", field="results")
    keys = _csv(by)
    with open_results(path) as store:
        rows = store.rows()
        runs = store.runs()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    groups = cell_table(rows, keys)
    eff = effective_lengths(rows, n_boot=n_boot)
    problems = [{"status": r["status"], "cell": r["cell"], "error": r["error"]} for r in rows if r["status"] != "done"]
    if as_json:
        from ctxmem.store.postgres import redact

        echo_json({"db": redact(str(path)), "status": counts, "groups": groups, "effective_length": eff,
                   "problems": problems, "runs": runs})
        return
    from ctxmem.store.postgres import redact

    click.echo(f"{redact(str(path))}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    click.echo(table([[*(g[k] for k in keys), g["n"], f"{g['accuracy']:.3f}", f"[{g['low']:.2f}, {g['high']:.2f}]",
                       " ".join(f"{k}={v}" for k, v in sorted(g["labels"].items()))] for g in groups],
                     [*keys, "n", "accuracy", "wilson95", "labels"]))
    if eff:
        click.echo("")
        click.echo(table([[e["model"], e["preset"], _ci(e["ruler"]), _ci(e["nolima"]),
                           f"{e['nolima']['base_score']:.3f}"] for e in eff],
                         ["model", "preset", "effective (RULER 85.6)", "effective (NoLiMa 85% base)", "base"]))
    for p in problems[:20]:
        c = p["cell"]
        click.echo(f"{p['status']}: {c['source']} {c['length']} depth={c['depth']} {c['needle']} {c['preset']} "
                   f"{c['model']}: {p['error']}")


@eval_group.command("bench")
@click.option("--length", type=TOKENS, default="1M", show_default=True, help="Cell length in tokens.")
@click.option("--tokenizer", default="o200k_base", show_default=True)
@click.option("--source", default="prose", show_default=True)
@json_option
def bench_cmd(length: int, tokenizer: str, source: str, as_json: bool) -> None:
    """Time building one cell by splicing vs re-encoding the whole context (the original harness)."""
    from ctxmem.evals.bench import bench_cell_build
    r = bench_cell_build(length, tokenizer=tokenizer, source=source)
    if as_json:
        echo_json(r)
        return
    click.echo(f"{r['length']:,}-token {source} cell in {tokenizer}: one-time encode {r['one_time_encode_s']} s; "
               f"splice {r['splice_ms_median']} ms vs naive re-encode {r['naive_ms_median']} ms "
               f"({r['speedup']}x, {r['naive_encodes']} full encodes per naive cell); claimed {r['claimed_tokens']:,} "
               f"tokens, re-encoded {r['real_tokens']:,} (naive: {r['naive_claimed_tokens']:,} / "
               f"{r['naive_real_tokens']:,})")


def _results_exist(db: str) -> bool:
    """Whether a results database a read-only command names is there: a file path or a
    ``sqlite:`` URL must name an existing file (a read never creates one); a server URL
    (``postgresql://``) is checked by connecting."""
    if db.startswith("sqlite:"):
        rest = db.split(":", 1)[1]
        path = rest[3:] if rest.startswith("///") else rest[2:] if rest.startswith("//") else rest
        return path in ("", ":memory:") or Path(path).is_file()
    return "://" in db or Path(db).is_file()


def _ci(d: dict[str, Any]) -> str:
    def f(x: Any) -> str:
        return "none" if x is None else str(x)

    return f"{f(d['point'])} [{f(d['low'])}, {f(d['high'])}]"


__all__ = ["eval_group"]
