"""``ctxmem tune``: what context choices cost, which budget to pick, how much context fits a GPU.

* ``tune cost`` — replay a recorded session (or a synthetic one) under several presets and
  print tokens, cache hits and dollars side by side (see :mod:`ctxmem.tune.replay`);
* ``tune sweep`` — presets × budgets on a workload, Pareto plot, recommended preset;
* ``tune kv`` — KV-cache memory and the longest context on a GPU from a ``config.json``;
* ``tune prices`` — the price table in use, with sources.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ctxmem.cli._common import (
    CtxmemGroup,
    db_option,
    echo_json,
    json_option,
    open_existing_store,
    resolve_session_id,
    table,
)
from ctxmem.cli._options import (
    TOKEN_LIST,
    TOKENS,
    preset_option,
    split_multi,
    utf8_text,
    window_option,
)
from ctxmem.errors import InputError


@click.group(cls=CtxmemGroup)
def tune() -> None:
    """Cost models, budget sweeps and KV-cache estimates."""


@tune.command("cost")
@click.option("--session", "session_id", default=None, callback=utf8_text("session"),
              help="Session id to replay (ctxmem sessions list).")
@click.option("--synthetic", "synthetic_turns", type=click.IntRange(1, 100_000), default=None,
              help="Replay a synthetic kernel session of this many turns instead (1200 ≈ 1M tokens).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the synthetic session.")
@preset_option(required=True)
@click.option("--price-model", "model", default="claude-sonnet-4-5", show_default=True,
              help="Model whose prices apply (ctxmem tune prices).")
@click.option("--prices", "prices_file", default=None, type=click.Path(dir_okay=False),
              help="TOML file overriding or extending the price table.")
@click.option("--caching", type=click.Choice(["on", "off", "both"]), default="both", show_default=True,
              help="Bill with prompt caching, without, or both side by side.")
@click.option("--ttl", type=click.Choice(["default", "1h"]), default="default", show_default=True,
              help="Cache TTL: the model's default (5 min) or Anthropic's 1-hour write.")
@click.option("--cache-mode", type=click.Choice(["auto", "prefix", "breakpoints"]), default="auto",
              show_default=True, help="Cache model: Anthropic breakpoints or automatic prefix caching.")
@click.option("--pace", type=click.FloatRange(min=0), default=None,
              help="Assume this many seconds between requests (default: recorded timestamps).")
@window_option(budget_alias=True, help="Override every preset's context window (e.g. 200k).")
@click.option("--batch", is_flag=True, help="Apply the provider's batch discount.")
@click.option("--per-turn", is_flag=True, help="Include every turn in --json output.")
@click.option("--anthropic-native", is_flag=True,
              help="Also price each masking preset as Anthropic server-side clearing (clear_tool_uses_20250919).")
@db_option
@json_option
def cost_cmd(
    session_id: str | None,
    synthetic_turns: int | None,
    seed: int,
    presets: tuple[str, ...],
    model: str,
    prices_file: str | None,
    caching: str,
    ttl: str,
    cache_mode: str,
    pace: float | None,
    window: int | None,
    batch: bool,
    per_turn: bool,
    anthropic_native: bool,
    db_path: str,
    as_json: bool,
) -> None:
    """Replay a session under presets and compare tokens, cache hits and dollars."""
    from ctxmem.tune.prices import load_prices
    from ctxmem.tune.replay import Recording, compare, recording_from_session

    if (session_id is None) == (synthetic_turns is None):
        raise InputError("give exactly one of --session ID or --synthetic TURNS", field="session")
    price = load_prices(prices_file).get(model)
    names = split_multi(presets)
    if session_id is not None:
        from ctxmem.session import Session
        with open_existing_store(db_path) as store:  # a replay only reads: it never creates a store
            recording = recording_from_session(Session.open(store, resolve_session_id(store, session_id)))
    else:
        from ctxmem.samples import synthetic_session

        assert synthetic_turns is not None
        recording = Recording(synthetic_session(synthetic_turns, seed), source=f"synthetic(turns={synthetic_turns}, seed={seed})")
    reports = compare(recording, names, price, caching=caching, budget=window, ttl=ttl,  # type: ignore[arg-type]
                      cache_mode=cache_mode, pace_s=pace, batch=batch)
    if anthropic_native:  # the server-side equivalent of each masking preset, replayed the same way
        from ctxmem.integrations.anthropic_native import native_reports

        reports += native_reports(recording, names, price, caching=caching, budget=window, ttl=ttl,
                                  cache_mode=cache_mode, pace_s=pace, batch=batch)
    if as_json:
        echo_json({
            "source": recording.source,
            "price": price.to_json(),
            "reports": [r.to_json(per_turn=per_turn) for r in reports],
        })
        return
    click.echo(f"{recording.source} · {len(reports[0].turns) if reports else 0} requests · {price.name} "
               f"(${price.model.input:g} in / ${price.model.output:g} out per MTok; as of {price.model.as_of})")
    rows: list[list[Any]] = []
    for r in reports:
        g = r.growth()
        rows.append([
            r.label, f"{r.tokens_sent:,}", f"{r.cache_read:,}", f"{r.cache_write:,}", f"{r.hit_ratio:.1%}",
            f"{r.peak_context:,}", r.compactions, f"${r.dollars:,.2f}",
            f"{g['tokens_sent']:.2f}" if g["tokens_sent"] is not None else "-",
            (f"stopped: {r.overflow.split(':')[0]}" if r.overflow else ""),
        ])
    click.echo(table(rows, ["preset", "tokens sent", "cache read", "cache write", "hit", "peak", "compactions",
                            "dollars", "growth", "note"]))
    click.echo("growth: exponent k of cumulative tokens sent ∝ turns^k over the second half (2 = quadratic)")
    # A note that applies to every preset (the pace assumed for a bulk import, a model
    # without a prompt cache) is said once, not once per row.
    said: dict[str, list[str]] = {}
    for r in reports:
        for n in r.notes:
            said.setdefault(n, []).append(r.label)
    for n, labels in said.items():
        click.echo(f"note: {n}" if len(labels) == len(reports) else f"note ({', '.join(labels)}): {n}")


@tune.command("sweep")
@click.option("--workload", required=True,
              help="A registered workload: kernel, synthetic or a plugin (`ctxmem workload list`).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A workload setting (repeatable), e.g. --set scale=small --set max_calls=30 (kernel), "
                   "--set turns=300 (synthetic).")
@preset_option(("dump-truncate-200k,window-200k,masking-200k,masking-turns-128k",))
@click.option("--windows", "--budgets", "windows", type=TOKEN_LIST, default="32k,64k,128k,200k", show_default=True,
              help="Context windows to sweep, a comma list (k = 1,000; M = 1,000,000; Ki = 1,024).")
@click.option("--objective", default="min-cost-at-recall>=0.9", show_default=True,
              help="max-recall-under-cost<=DOLLARS, min-cost-at-recall>=SCORE, max-recall or min-cost.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for sweep.json, pareto.png and the recommended preset.")
@click.option("--price-model", "model", default="claude-sonnet-4-5", show_default=True)
@click.option("--prices", "prices_file", default=None, type=click.Path(dir_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--caching", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Bill every cell with prompt caching or without.")
@click.option("--plot/--no-plot", default=True, show_default=True)
@json_option
def sweep_cmd(
    workload: str,
    settings: tuple[str, ...],
    presets: tuple[str, ...],
    windows: list[int],
    objective: str,
    out_dir: str,
    model: str,
    prices_file: str | None,
    seed: int,
    caching: str,
    plot: bool,
    as_json: bool,
) -> None:
    """Sweep presets × budgets on a workload; write the Pareto plot and a recommended preset.

    Each cell runs the workload once in context mode (the agent decides from what the
    preset keeps at the cell's budget) and scores it with the workload's own score:
    synthetic — needle recall; kernel — recall × (1 − regret) × (1 − waste).
    """
    from ctxmem.config import load_preset
    from ctxmem.tune.prices import load_prices
    from ctxmem.tune.sweep import Cell, parse_objective, sweep_to_dir
    from ctxmem.workloads import get_workload, parse_settings

    wl = get_workload(workload, parse_settings(settings))  # unknown names and bad settings fail first
    wl.check()
    price = load_prices(prices_file).get(model)
    names = split_multi(presets)
    sizes = list(windows)
    parse_objective(objective)  # bad input fails before the progress bar starts
    for name in names:
        load_preset(name)
    total = len(names) * len(sizes)
    bar: Any = click.progressbar(length=total, label="sweep", file=sys.stderr, show_pos=True)
    with bar:
        def progress(_: Cell) -> None:
            bar.update(1)

        result = sweep_to_dir(wl, names, sizes, price, out_dir, objective=objective, plot=plot, seed=seed,
                              caching=caching == "on", progress=progress)
    if as_json:
        echo_json(result.to_json())
        if result.unmet:
            sys.exit(1)
        return
    front = {c.key for c in result.front()}
    rows = [[c.key, "-" if c.score is None else f"{c.score:.3f}", f"${c.dollars:.4f}", f"{c.tokens_sent:,}",
             f"{c.build_ms_median:.3f}", c.metrics.get("waste_per_100", ""), "*" if c.key in front else "",
             c.error or ""] for c in result.cells]
    click.echo(table(rows, ["cell", "score", "dollars", "tokens sent", "build ms", "waste/100", "pareto", "error"]))
    rec = result.recommendation
    if rec is not None:
        click.echo(f"\nrecommended for {result.objective}: {rec.key} (score {rec.score:.3f}, ${rec.dollars:.4f})")
        click.echo(f"preset: {result.preset_path}")
    if result.plot_path:
        click.echo(f"plot: {result.plot_path}")
    click.echo(f"results: {Path(out_dir) / 'sweep.json'}")
    if result.unmet:
        click.echo(f"error: objective {result.objective} not met: {result.unmet} "
                   "(every cell's results are written above; no preset was recommended)", err=True)
        sys.exit(1)


@tune.command("kv")
@click.option("--config", "config_path", required=True, type=click.Path(),
              help="A transformers config.json (or the folder holding it).")
@click.option("--gpu-mem", default=None, help="GPU memory, e.g. 24GiB, 80GB (GB is decimal, GiB binary; a bare 24 means 24 GiB).")
@click.option("--kv-dtype", default="fp16", show_default=True, help="fp32, fp16, bf16, fp8, q8_0 or q4_0.")
@click.option("--weights-gib", type=click.FloatRange(min=0), default=None,
              help="Weight memory in GiB (default: estimated from the config).")
@click.option("--weight-dtype", default=None, help="Dtype for the weight estimate (default: the config's).")
@click.option("--overhead-gib", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Margin for the CUDA context, activations and workspace.")
@click.option("--sequences", type=click.IntRange(min=1), default=1, show_default=True,
              help="Concurrent sequences sharing the GPU.")
@click.option("--context", type=TOKENS, default=None, help="Also report the memory at this context (e.g. 128k).")
@click.option("--mla-mode", type=click.Choice(["compressed", "expanded"]), default="compressed", show_default=True,
              help="MLA models: cache the compressed latent, or decompressed per-head K/V.")
@json_option
def kv_cmd(
    config_path: str,
    gpu_mem: str | None,
    kv_dtype: str,
    weights_gib: float | None,
    weight_dtype: str | None,
    overhead_gib: float,
    sequences: int,
    context: int | None,
    mla_mode: str,
    as_json: bool,
) -> None:
    """KV-cache memory per token, at a context, and the longest context on a GPU."""
    from ctxmem.tune.kv import GiB, estimate

    # the config is read first: a bad file is reported whatever else is missing
    est = estimate(config_path, kv_dtype=kv_dtype, gpu_mem=gpu_mem, weights_gib=weights_gib,
                   weight_dtype=weight_dtype, overhead_gib=overhead_gib, sequences=sequences,
                   mla_mode=mla_mode)  # type: ignore[arg-type]
    if gpu_mem is None and context is None:
        raise InputError("give --gpu-mem (longest context) and/or --context (memory at a context)", field="gpu_mem")
    ctx = context
    data = est.to_json(ctx)
    if as_json:
        echo_json(data)
        return
    layers = data["layers"]
    click.echo(f"{data['model_type'] or 'model'}: {layers['total']} layers ({layers['full']} full, {layers['sliding']} "
               f"sliding{', window ' + str(data['sliding_window']) if data['sliding_window'] else ''}"
               f"{', ' + str(layers['linear']) + ' linear' if layers['linear'] else ''}), {data['attention']}")
    click.echo(f"KV per token: {data['full_bytes_per_token'] + data['sliding_bytes_per_token']:,} bytes at {data['kv_dtype']} "
               f"({data['bytes_per_token_per_layer']:,} per layer)")
    click.echo(f"weights: {data['weights_gib']:.2f} GiB ({data['weights_source']}); overhead {data['overhead_gib']:.2f} GiB")
    if "max_context" in data:
        mc = data["max_context"]
        click.echo(f"max context on {data['gpu_gib']:.2f} GiB: {mc:,} tokens ({data['limited_by']})" if mc is not None
                   else f"max context on {data['gpu_gib']:.2f} GiB: {data['limited_by']}")
    if ctx is not None:
        mem = est.memory_at(ctx)
        if "fits" not in data:
            fits = ""
        elif data.get("beyond_position_limit"):
            fits = " — does NOT fit: past the model's position limit"
        else:
            fits = " — fits" if data["fits"] else " — does NOT fit"
        click.echo(f"at {ctx:,} tokens: KV {mem['kv_cache'] / GiB:.2f} GiB, total {mem['total'] / GiB:.2f} GiB{fits}")
        if data.get("note"):
            click.echo(f"note: {data['note']}")


@tune.command("prices")
@click.option("--prices", "prices_file", default=None, type=click.Path(dir_okay=False))
@json_option
def prices_cmd(prices_file: str | None, as_json: bool) -> None:
    """The price table in use ($ per million tokens), with sources and dates."""
    from ctxmem.tune.prices import load_prices

    t = load_prices(prices_file)
    if as_json:
        echo_json({"files": t.files, "models": [t.entries[n].to_json() for n in t.names()]})
        return
    rows = []
    for n in t.names():
        m = t.entries[n].model
        rows.append([n, m.provider, f"{m.input:g}", f"{m.output:g}", "-" if m.cache_write is None else f"{m.cache_write:g}",
                     "-" if m.cache_read is None else f"{m.cache_read:g}", f"{m.cache_ttl_s:g}s",
                     f"{m.batch_discount:.0%}", str(m.as_of)])
    click.echo(table(rows, ["model", "provider", "input", "output", "cache write", "cache read", "ttl", "batch",
                            "as of"]))
    click.echo("sources: ctxmem tune prices --json; files: " + ", ".join(t.files))


__all__ = ["tune"]
