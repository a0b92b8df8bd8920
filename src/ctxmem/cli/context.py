"""``ctxmem context build``: the dry run users debug strategies with."""

from __future__ import annotations

import time
from typing import Any

import click

from ctxmem.cli._common import (
    CtxmemGroup,
    db_option,
    echo_json,
    json_option,
    open_existing_store,
    resolve_session_id,
)
from ctxmem.cli._options import TOKENS, utf8_text
from ctxmem.config import load_preset
from ctxmem.context.probe import probe_status
from ctxmem.messages import to_anthropic
from ctxmem.session import Session


@click.group(cls=CtxmemGroup)
def context() -> None:
    """Build contexts from recorded sessions."""


@context.command("build")
@click.option("--session", "session_id", required=True, callback=utf8_text("session"),
              help="Session: an id, a unique prefix of one, or latest (ctxmem sessions list).")
@click.option("--preset", required=True, help="Preset name or path to a .toml file (ctxmem strategies list).")
@click.option("--window", "--budget", "budget", type=TOKENS, default=None,
              help="Override the preset's context window (e.g. 128k).")
@click.option("--tokenizer", default=None, help="Override the preset's tokenizer.")
@click.option("--system", default=None, help="System prompt to budget for.")
@click.option(
    "--summarizer-model",
    default=None,
    help="Client spec for an LLM summarizer (summarizer = 'llm'), e.g. anthropic:claude-haiku-4-5.",
)
@click.option("--probe", "probes", multiple=True, help="Report whether this text survives in the context (repeatable).")
@click.option("--messages/--no-messages", "with_messages", default=True, help="Include the messages in --json output.")
@click.option(
    "--cache/--no-cache",
    "cache_derived",
    default=True,
    show_default=True,
    help="Save what the build derives (facts index, summaries, ledger, postings) in the store, so the next build "
    "of this session does not read every message again. Never the session's events.",
)
@db_option
@json_option
def build_cmd(
    session_id: str,
    preset: str,
    budget: int | None,
    tokenizer: str | None,
    system: str | None,
    summarizer_model: str | None,
    probes: tuple[str, ...],
    with_messages: bool,
    cache_derived: bool,
    db_path: str,
    as_json: bool,
) -> None:
    """Build the next request's context for a session with a preset, and report what it did."""
    if budget is not None and budget <= 0:
        raise click.BadParameter("a context window must be at least 1 token", param_hint="'--window'")
    p = load_preset(preset)
    deps: dict[str, Any] = {}
    if summarizer_model is not None:
        from ctxmem.clients import get_client

        if "client" not in p.dependencies():
            raise click.UsageError(f"--summarizer-model: preset {p.name!r} has no LLM summarizer (summarizer = 'llm')")
        deps["client"] = get_client(summarizer_model)
    builder = p.builder(context_window=budget, tokenizer=tokenizer, **deps)
    tok = builder.tokenizer
    with open_existing_store(db_path) as store:  # a dry run creates no store
        session = Session.open(store, resolve_session_id(store, session_id))
        history = builder.history(session)
        t0 = time.perf_counter()
        # A dry run: the session is read (recall handles, retrieval), never written. The
        # derived-state cache may be (--cache): a 1M-token session's next build then restores
        # the facts index instead of reading every tool output again (~1 s at 1M, ~8 s at 10M).
        # A session that ends with the model's answer (an imported transcript, most often) is
        # built for the user message that comes next; unanswered tool calls are still an error.
        answered = bool(history.messages) and history.flags[-1].role == "assistant" and not history.flags[-1].tool_uses
        built = builder.build(history, system=system, session=session, record=False, cache_derived=cache_derived,
                              expect_input=answered)
        elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {
        "session": session.id,
        "preset": p.name,
        "tokenizer": tok,
        "build_ms": round(elapsed * 1000, 3),
        "report": built.report.to_json(),
        "cache_breakpoints": list(built.cache_breakpoints),
        "extra_tools": [t.name for t in built.extra_tools],
        "probes": {needle: probe_status(needle, built, history) for needle in probes},
        "for_next_input": answered,
    }
    if with_messages:
        out["messages"] = to_anthropic(built.messages)
    if as_json:
        echo_json(out)
        return
    r = built.report
    click.echo(f"{p.name} ({p.type}): {r.tokens_in} → {r.tokens_out} tokens of {r.available} available "
               f"in {elapsed * 1000:.2f} ms")
    click.echo("sections: " + ", ".join(f"{k}={v}" for k, v in r.sections.items()))
    click.echo(f"kept {len(r.kept)}, masked {len(r.masked)}, summarized {len(r.summarized)}, dropped {len(r.dropped)} "
               f"messages; headroom {r.headroom_tokens} tokens")
    if answered:
        click.echo(f"note: the session ends with the model's answer (message {len(history) - 1}): this is the "
                   "context the next user message will follow")
    for note in r.notes:
        click.echo(f"note: {note}")
    for needle, status in out["probes"].items():
        click.echo(f"probe {needle!r}: {status}")
