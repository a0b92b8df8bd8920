"""``ctxmem workload list|run``: every registered workload; ``workload kernel run|compare``.

``workload list`` names every workload in the ``ctxmem.workloads`` entry-point group
(built-ins and plugins alike) with its settings, modes and score columns; ``workload run
NAME [--set key=value …]`` records one run of any of them through the
:class:`~ctxmem.workloads.Workload` protocol and prints its scores.

The ``kernel`` group is the kernel workload's own, kept for its richer options: ``run`` records one run (scripted policy in any mode, or an LLM through ``--model``) in the
store and prints its score table; ``compare`` runs the scripted policy in context mode once
per preset and prints one row per preset, under reference rows for the ``oracle`` and
``amnesic-K`` modes (same seed, scale and window), so a strategy's waste and recall sit
between the policy that remembers everything and one that remembers only its last K turns.
At small scale the session is about 50k o200k tokens, so compare defaults to a 20k window:
under a 200k window nothing is ever cut and every preset gives the same row. Progress bars
go to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ctxmem.cli._common import CtxmemGroup, db_option, echo_json, json_option, open_db, table
from ctxmem.cli._options import TOKENS, model_option, preset_option, split_multi, window_option
from ctxmem.errors import InputError


@click.group("workload", cls=CtxmemGroup)
def workload() -> None:
    """Driving workloads that produce long, realistic agent sessions."""


@workload.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every registered workload: name, settings, modes, score columns, who registered it."""
    from ctxmem.errors import CtxmemError
    from ctxmem.workloads import WORKLOADS, describe

    data = []
    for name in WORKLOADS.names():
        try:
            data.append(describe(name))
        except CtxmemError as exc:  # one broken plugin: said on stderr, the others still listed
            click.echo(f"warning: {exc}", err=True)
    if as_json:
        echo_json(data)
        return
    rows = [[d["name"], d["source"], ", ".join(d["modes"]), ", ".join(d["settings"]), d["description"]]
            for d in data]
    click.echo(table(rows, ["workload", "from", "modes", "settings (--set)", "description"]))


def _mode_is(mode: str, listed: str) -> bool:
    """``mode`` is the listed mode, or of its numbered family (``amnesic-8`` lists ``amnesic-K``)."""
    return mode == listed or (listed[-1:].isdigit() and mode.startswith(listed.rstrip("0123456789")))


@workload.command("run")
@click.argument("name")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="A workload setting (repeatable); `ctxmem workload list` shows each workload's.")
@preset_option(None, multiple=False, help="Preset name or TOML path the agent's context comes from.")
@click.option("--mode", default=None, help="The workload's mode (default: its first; see `workload list`).")
@window_option(help="Override the preset's context window (e.g. 32k).")
@click.option("--seed", type=int, default=0, show_default=True)
@db_option
@json_option
def generic_run_cmd(name: str, settings: tuple[str, ...], preset: str | None, mode: str | None,
                    window: int | None, seed: int, db_path: str, as_json: bool) -> None:
    """Record one run of any registered workload and print its scores."""
    from ctxmem.workloads import get_workload, parse_settings

    wl = get_workload(name, parse_settings(settings))
    wl.check()  # missing extras stop here, before anything is recorded (the workload checks its mode)
    if mode is not None and wl.modes and not any(_mode_is(mode, m) for m in wl.modes):
        # before the store is opened (an unknown mode left an empty store behind) and the progress line
        from ctxmem.errors import ConfigError

        raise ConfigError(f"unknown mode {mode!r} for the {name} workload; choose {', '.join(wl.modes)}", field="mode")
    if preset is not None:
        from ctxmem.config import load_preset

        load_preset(preset)
    size = window
    with open_db(db_path) as store:
        run = _progress_runner(f"{name} {mode or wl.modes[0]}",
                               lambda progress: wl.run(store, preset=preset, window=size, seed=seed, mode=mode,
                                                       progress=progress), 1)
    if as_json:
        echo_json(run.to_json())
        return
    click.echo(f"session {run.session_id} · workload {name} · mode {run.mode} · {run.history_tokens:,} tokens"
               + (f" · score {run.score:.3f}" if run.score is not None else ""))
    click.echo(table([[run.scores.get(key) for _, key in wl.score_columns]], [h for h, _ in wl.score_columns]))


@workload.group("kernel", cls=CtxmemGroup)
def kernel() -> None:
    """The kernel-optimization workload (Triton extend attention on SIMX-1)."""


def require_kernel_deps() -> None:
    """Stop before starting when the kernel extras are missing: without torch and triton
    every correctness check would fail and the run would score 0 with no warning. The
    kernel workload's own :meth:`~ctxmem.workloads.Workload.check` says so."""
    from ctxmem.workloads import get_workload

    get_workload("kernel").check()


def _rows(results: list[Any], label: str) -> str:
    from ctxmem.workloads.kernel.scores import TABLE_COLUMNS, table_row

    rows = [[getattr(r, label), *table_row(r.scores)] for r in results]
    return table(rows, [label, *(name for name, _ in TABLE_COLUMNS)])


def _progress_runner(label: str, fn: Any, total: int) -> Any:
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        state = {"n": 0}

        def progress(done: int, total_now: int) -> None:
            if total_now and bar.length != total_now:
                bar.length = total_now
            bar.update(done - state["n"])
            state["n"] = done

        return fn(progress)


@kernel.command("run")
@click.option("--policy", type=click.Choice(["scripted", "llm"]), default="scripted", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mode", default="oracle", show_default=True, help="oracle | amnesic-K | context | quitter")
@preset_option("pipeline-200k", multiple=False, help="Preset name or TOML path.")
@click.option("--device", type=click.Choice(["simx", "gpu"]), default="simx", show_default=True)
@click.option("--allow-unsandboxed-gpu", is_flag=True,
              help="With --policy llm --device gpu: run the model's kernels on the GPU outside the OS sandbox "
                   "(they still pass the static screen and get a scrubbed environment).")
@click.option("--scale", type=click.Choice(["small", "full"]), default="small", show_default=True)
@click.option("--max-calls", type=int, default=None, help="Stop (and submit) within this many tool calls.")
@window_option(help="Override the preset's context window (e.g. 32k).")
@model_option(None, multiple=False, help="LLM policy: a client spec such as anthropic:claude-sonnet-4-5.")
@db_option
@json_option
def run_cmd(policy: str, seed: int, mode: str, preset: str, device: str, allow_unsandboxed_gpu: bool, scale: str,
            max_calls: int | None, window: int | None, model: str | None, db_path: str, as_json: bool) -> None:
    """Run the workload once, record the session, print its scores."""
    require_kernel_deps()
    from ctxmem.workloads.kernel.policy import parse_mode
    from ctxmem.workloads.kernel.run import DEFAULT_MAX_CALLS, run_llm, run_scripted

    try:
        parse_mode(mode)
    except ValueError as exc:
        raise InputError(str(exc), field="mode") from None
    if policy == "llm" and device == "gpu" and not allow_unsandboxed_gpu:
        raise InputError("--policy llm --device gpu would run the model's kernels on the GPU outside the sandbox "
                         "(CUDA needs the device): add --allow-unsandboxed-gpu to accept that, or use --device simx",
                         field="device")
    store = open_db(db_path)
    try:
        if policy == "llm":
            if not model:
                raise InputError("--policy llm needs --model (e.g. anthropic:claude-sonnet-4-5)", field="model")
            from ctxmem.clients import get_client

            result = run_llm(store, get_client(model), seed=seed, preset=preset, max_calls=max_calls or 50,
                             device=device, window=window, allow_unsandboxed_gpu=allow_unsandboxed_gpu)  # type: ignore[arg-type]
        else:
            total = max_calls or DEFAULT_MAX_CALLS[scale]
            result = _progress_runner(
                f"kernel {mode} · {preset}",
                lambda progress: run_scripted(store, seed=seed, mode=mode, preset=preset, scale=scale,  # type: ignore[arg-type]
                                              max_calls=max_calls, device=device, window=window,  # type: ignore[arg-type]
                                              progress=progress),
                total)
    finally:
        store.close()
    if as_json:
        echo_json(result.to_json())
        return
    click.echo(f"session {result.session_id} · {result.scores['tool_calls']} calls · "
               f"{result.history_tokens} o200k tokens · {result.scores['evaluations']} evaluations · "
               f"{result.wall_s:.1f} s")
    click.echo(_rows([result], "mode"))


DEFAULT_PRESETS = "dump-truncate-200k,window-200k,masking-200k,pipeline-200k"


@kernel.command("compare")
@preset_option((DEFAULT_PRESETS,))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mode", default="context", show_default=True, help="Policy mode for every preset.")
@click.option("--reference", default="oracle,amnesic-8", show_default=True,
              help="Reference modes run once (with the first preset) for comparison; '' for none.")
@click.option("--scale", type=click.Choice(["small", "full"]), default="small", show_default=True)
@click.option("--max-calls", type=int, default=None)
@click.option("--window", type=TOKENS, default=None,
              help="Context window (tokens) for every row. Default: 20000 at small scale (the ~50k-token "
                   "small session must overflow it for the presets to differ), the presets' own at full "
                   "scale; 0 keeps the presets' own.")
@db_option
@json_option
def compare_cmd(presets: tuple[str, ...], seed: int, mode: str, reference: str, scale: str, max_calls: int | None,
                window: int | None, db_path: str, as_json: bool) -> None:
    """Reference rows (oracle, amnesic-K) and one row per preset, same seed, scale and window."""
    require_kernel_deps()
    from ctxmem.workloads.kernel.policy import parse_mode
    from ctxmem.workloads.kernel.run import COMPARE_WINDOW, DEFAULT_MAX_CALLS, run_scripted

    names = split_multi(presets)
    if not names:
        raise InputError("--presets is empty", field="presets")
    references = [m.strip() for m in reference.split(",") if m.strip()]
    for m in [mode, *references]:
        try:
            parse_mode(m)
        except ValueError as exc:
            raise InputError(str(exc), field="mode") from None
    if window is None:
        window = COMPARE_WINDOW[scale]
    window = window or None
    plan = [("reference", m, names[0]) for m in references] + [("preset", mode, name) for name in names]
    store = open_db(db_path)
    results = []
    try:
        for _role, row_mode, name in plan:
            results.append(_progress_runner(
                f"kernel {row_mode} · {name}",
                lambda progress, name=name, row_mode=row_mode: run_scripted(
                    store, seed=seed, mode=row_mode, preset=name, scale=scale,  # type: ignore[arg-type]
                    max_calls=max_calls, window=window, progress=progress),
                max_calls or DEFAULT_MAX_CALLS[scale]))
    finally:
        store.close()
    if as_json:
        echo_json([{**r.to_json(), "role": role, "window": window}
                   for (role, _, _), r in zip(plan, results, strict=True)])
        return
    from ctxmem.workloads.kernel.scores import TABLE_COLUMNS, table_row

    click.echo(f"seed {seed} · {scale} scale · window "
               f"{f'{window:,} tokens' if window else 'of each preset'}")
    rows = [[r.mode, r.preset, *table_row(r.scores)] for r in results]
    click.echo(table(rows, ["mode", "preset", *(n for n, _ in TABLE_COLUMNS)]))


__all__ = ["workload"]
