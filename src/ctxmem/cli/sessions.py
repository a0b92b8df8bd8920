"""``ctxmem sessions``: import, list, show, events, export, search, fork and rewind.

Every command prints one clear line and exits 1 on a ctxmem error (bad file, unknown
session or event), never a traceback. ``import`` writes the whole session in one
transaction or nothing; ``fork`` and ``rewind`` are one transaction each, so a process
killed at any moment leaves each either done or not started.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ctxmem.cli._common import (
    CtxmemGroup,
    db_option,
    echo_json,
    json_option,
    open_db,
    open_existing_store,
    resolve_session_id,
    table,
)
from ctxmem.cli._options import utf8_text
from ctxmem.errors import EventNotFoundError
from ctxmem.events import MessageEvent, ToolCallEvent, ToolResultEvent, messages_from_events
from ctxmem.jsonl import FORMATS, export_lines, import_file
from ctxmem.messages import to_anthropic
from ctxmem.session import Session
from ctxmem.store import SQLiteStore


@click.group(cls=CtxmemGroup)
def sessions() -> None:
    """Recorded agent sessions."""


def _cpu_seconds() -> float:
    """CPU seconds of this process (every thread: quicktok counts on one) and its reaped
    children (a counting child for other engines, see ``ctxmem.store.parallel_count``):
    what an import costs whatever the machine's load."""
    cpu = time.process_time()  # os.times() counts in clock ticks (10 ms): too coarse here
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return cpu
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return cpu + kids.ru_utime + kids.ru_stime


@sessions.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="anthropic", show_default=True)
@click.option(
    "--tokenizer",
    "tokenizers",
    multiple=True,
    default=("o200k_base",),
    show_default=True,
    help="Tokenizer to count with on import (repeatable): o200k_base, cl100k_base, heuristic, hf:PATH…",
)
@click.option("--title", default=None, callback=utf8_text("title"), help="A title for the session.")
@db_option
@json_option
def import_cmd(file: str, fmt: str, tokenizers: tuple[str, ...], title: str | None, db_path: str, as_json: bool) -> None:
    """Import a JSONL transcript (one message per line) as a new session.

    All or nothing: the file is validated first, then the session and its events are
    written in one transaction. A bad line (malformed JSON, a lone surrogate, NaN,
    nesting deeper than 256 levels, an orphan tool result, ...) prints one line naming
    the line and field and exits 1. A file with no message (empty, blank lines only, a
    system prompt only) prints "no messages to import" and exits 1: nothing is created.
    A UTF-8 byte-order mark is accepted.
    """
    tokenizers = tuple(dict.fromkeys(tokenizers))  # a repeated --tokenizer counts once (order kept)
    # The id is chosen here (as the store would: a uuid4 hex) so that an interrupt can tell
    # whether the one transaction committed before it landed.
    new_id = uuid.uuid4().hex
    with open_db(db_path) as store:
        # Loading an encoding (0.3-0.7 s of CPU) is start-up, reported on its own;
        # import_seconds is the import itself, what the counting floor compares to.
        t0 = time.perf_counter()
        for name in tokenizers:
            store.tokenizer(name)
        loaded = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), _cpu_seconds()
        try:
            session = import_file(store, file, fmt=fmt, title=title, tokenizers=tokenizers, session_id=new_id)
        except KeyboardInterrupt:
            if _session_exists(store, new_id):  # Ctrl-C landed after the COMMIT: the session is there
                click.echo(f"interrupted, but the import had committed: imported as session {new_id} "
                           f"(ctxmem sessions show {new_id} prints it)", err=True)
                sys.exit(0)
            click.echo("interrupted: nothing was imported (the import is one transaction)", err=True)
            sys.exit(130)
        elapsed, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        try:
            summary = _summary(session, tokenizers[0] if tokenizers else None)
        except KeyboardInterrupt:
            # The session is committed: saying "Aborted!" here made a user import it twice.
            click.echo(f"imported as session {session.id}; interrupted before the summary "
                       f"(ctxmem sessions show {session.id} prints it)", err=True)
            sys.exit(0)
    summary["import_seconds"] = round(elapsed, 4)
    summary["import_cpu_seconds"] = round(cpu, 4)
    summary["tokenizer_load_seconds"] = round(loaded, 4)
    if as_json:
        echo_json(summary)
    else:
        tok = summary.get("tokens") or {}
        click.echo(
            f"imported {summary['messages']} messages ({summary['events']['total']} events) as session "
            f"{summary['id']} in {elapsed:.2f}s"
            + (f"; {tok['content']} content + {tok['overhead']} overhead tokens ({tok['tokenizer']})" if tok else "")
        )


def _session_exists(store: Any, session_id: str) -> bool:
    """Whether ``session_id`` is in the store (after an interrupt: did the import commit?)."""
    from ctxmem.errors import SessionNotFoundError

    try:
        store.get_session(session_id)
    except SessionNotFoundError:
        return False
    return True


@sessions.command("list")
@db_option
@json_option
def list_cmd(db_path: str, as_json: bool) -> None:
    """List sessions, newest first."""
    if "://" not in db_path and not Path(db_path).is_file():  # a read creates nothing
        if as_json:
            echo_json([])
        else:
            click.echo(f"no sessions (no store at {db_path} yet)")
        return
    with open_existing_store(db_path) as store:
        infos = sorted(store.list_sessions(), key=lambda s: (s.created_at, s.id), reverse=True)
        rows: list[dict[str, Any]] = [
            {
                "id": s.id,
                "title": s.title,
                "created_at": s.created_at,
                "events": store.event_count(s.id),
                "parent_session_id": s.parent_session_id,
                "tokenizers": list(s.tokenizers),
            }
            for s in infos
        ]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no sessions")
        return
    click.echo(
        table(
            [
                [
                    r["id"],
                    r["title"] or "",
                    time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])),
                    r["events"],
                    r["parent_session_id"] or "",
                ]
                for r in rows
            ],
            ["id", "title", "created", "events", "forked from"],
        )
    )


def _summary(session: Session, tokenizer: str | None) -> dict[str, Any]:
    info = session.info
    view = session.chain()
    kinds = Counter(se.kind for se in view.events)
    tools = Counter(se.event.tool_use.name for se in view.events if isinstance(se.event, ToolCallEvent))
    errors = sum(1 for se in view.events if isinstance(se.event, ToolResultEvent) and se.event.result.is_error)
    messages = messages_from_events(se.event for se in view.events)
    out: dict[str, Any] = {
        "id": info.id,
        "title": info.title,
        "created_at": info.created_at,
        "metadata": info.metadata,
        "head_event_id": info.head_event_id,
        "parent_session_id": info.parent_session_id,
        "fork_event_id": info.fork_event_id,
        "messages": len(messages),
        "roles": dict(Counter(m.role for m in messages)),
        "events": {"total": len(view.events), "by_kind": dict(sorted(kinds.items()))},
        "tool_calls": dict(tools.most_common()),
        "tool_errors": errors,
        "thinking_blocks": sum(
            1 for se in view.events if isinstance(se.event, MessageEvent) for b in se.event.blocks if b.type == "thinking"
        ),
        "pending_tool_uses": [{"id": u.id, "name": u.name} for u in session.pending_tool_uses()],
    }
    if tokenizer:
        t = session.totals(tokenizer)
        out["tokens"] = {"tokenizer": tokenizer, "content": t.content, "overhead": t.overhead, "total": t.total}
    return out


@sessions.command("show")
@click.argument("session_id", callback=utf8_text("session"))
@click.option("--tokenizer", default=None, help="Count tokens with this tokenizer (default: the session's first).")
@click.option("--transcript", is_flag=True, help="Print the conversation itself, message by message.")
@click.option("--width", type=click.IntRange(min=0), default=400, show_default=True,
              help="With --transcript: characters shown of each text (0: all).")
@db_option
@json_option
def show_cmd(session_id: str, tokenizer: str | None, transcript: bool, width: int, db_path: str,
             as_json: bool) -> None:
    """A session's summary (events, tokens, pending calls), or --transcript to read it.

    SESSION_ID may be a unique prefix of the id, or ``latest``.
    """
    with open_existing_store(db_path) as store:
        session = Session.open(store, resolve_session_id(store, session_id))
        if transcript:
            messages = session.messages()
            if as_json:
                echo_json([to_anthropic([m])[0] for m in messages])
            else:
                for i, m in enumerate(messages):
                    click.echo(_transcript_message(i, m, width))
            return
        tok = tokenizer or (session.info.tokenizers[0] if session.info.tokenizers else None)
        summary = _summary(session, tok)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"session {summary['id']}" + (f"  ({summary['title']})" if summary["title"] else ""))
    click.echo(f"messages: {summary['messages']}  ({_counts(summary['roles'])})")
    click.echo(f"events:   {summary['events']['total']}  ({_counts(summary['events']['by_kind'])})")
    if summary["tool_calls"]:
        top = ", ".join(f"{k}×{v}" for k, v in list(summary["tool_calls"].items())[:8])
        click.echo(f"tools:    {top}  ({summary['tool_errors']} errors)")
    if "tokens" in summary:
        t = summary["tokens"]
        click.echo(f"tokens:   {t['content']} content + {t['overhead']} overhead = {t['total']} ({t['tokenizer']})")
    if summary["pending_tool_uses"]:
        ids = ", ".join(f"{p['name']}({p['id']})" for p in summary["pending_tool_uses"])
        click.echo(f"pending:  {ids} never got a result (interrupted)")


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in d.items())


def _clip(text: str, width: int) -> str:
    if width and len(text) > width:
        return text[:width].rstrip() + f" … [{len(text) - width:,} more characters]"
    return text


def _transcript_message(index: int, m: Any, width: int) -> str:
    """One message as readable text: role, then each block (text, thinking, → calls, ← results)."""
    lines = [f"── [{index}] {m.role} " + "─" * 40]
    for b in m.content:
        if b.type == "text":
            lines.append(_clip(b.text, width))
        elif b.type == "thinking":
            lines.append("(thinking) " + _clip(b.thinking, width))
        elif b.type == "redacted_thinking":
            lines.append("(redacted thinking)")
        elif b.type == "tool_use":
            args = json.dumps(b.input, ensure_ascii=False)
            lines.append(f"→ {b.name}({_clip(args, width)})  [{b.id}]")
        elif b.type == "tool_result":
            mark = " ERROR" if b.is_error else ""
            lines.append(f"← [{b.tool_use_id}]{mark}\n" + _clip(b.text, width))
    return "\n".join(lines)


@sessions.command("export")
@click.argument("session_id", callback=utf8_text("session"))
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="anthropic", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None, help="File (default stdout).")
@db_option
def export_cmd(session_id: str, fmt: str, output: str | None, db_path: str) -> None:
    """Export a session as JSONL, one message per line (SESSION_ID: an id, a unique prefix, or latest)."""
    with open_existing_store(db_path) as store:
        session = Session.open(store, resolve_session_id(store, session_id))
        lines = list(export_lines(session, fmt=fmt))  # type: ignore[arg-type]
    data = "".join(line + "\n" for line in lines)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(data)
    else:
        sys.stdout.write(data)


@sessions.command("search")
@click.argument("query", callback=utf8_text("query"))
@click.option("--session", "session_id", default=None, callback=utf8_text("session"),
              help="Only this session's current chain (an id, a unique prefix, or latest).")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--fts", "raw", is_flag=True, help="QUERY is raw FTS5 syntax (AND, OR, NEAR, prefix*, \"phrases\").")
@db_option
@json_option
def search_cmd(query: str, session_id: str | None, limit: int, raw: bool, db_path: str, as_json: bool) -> None:
    """Full-text search over tool outputs: every word of QUERY, as typed (--fts for FTS5 syntax)."""
    from ctxmem.errors import InputError
    from ctxmem.store.query import MAX_QUERY_WORDS, plain_query

    if raw:
        if not query.strip():
            raise InputError("the search query is empty: give at least one word", field="query")
        if len(query.split()) > MAX_QUERY_WORDS:
            raise InputError(f"the --fts query has {len(query.split())} words; at most {MAX_QUERY_WORDS}",
                             field="query")
    else:
        query = plain_query(query)
    with open_existing_store(db_path) as store:
        sid = resolve_session_id(store, session_id) if session_id is not None else None
        hits = store.search(query, session_id=sid, limit=limit)
    if as_json:
        echo_json([_hit(h) for h in hits])
        return
    if not hits:
        click.echo("no matches", err=True)  # on stderr: stdout stays one line per hit
    for h in hits:
        click.echo(f"event {h.event_id}  {h.tool_name or '?'}  {h.snippet.replace(chr(10), ' ')}")


def _hit(h: Any) -> dict[str, Any]:
    return {k: getattr(h, k) for k in ("event_id", "session_id", "tool_use_id", "tool_name", "snippet", "score")}


def _event_row(se: Any) -> dict[str, Any]:
    ev = se.event
    row: dict[str, Any] = {"id": se.id, "parent_id": se.parent_id, "kind": se.kind, "role": None, "detail": ""}
    if isinstance(ev, MessageEvent):
        row["role"] = ev.role
        row["detail"] = " ".join(getattr(b, "text", "") or getattr(b, "thinking", "") for b in ev.blocks)
    elif isinstance(ev, ToolCallEvent):
        row["role"] = "assistant"
        row["detail"] = f"{ev.tool_use.name}({ev.tool_use.id})"
    elif isinstance(ev, ToolResultEvent):
        row["role"] = "user"
        row["detail"] = f"{ev.tool_name or '?'}({ev.result.tool_use_id}){' error' if ev.result.is_error else ''}: " + (
            ev.result.text
        )
    else:
        row["detail"] = str(getattr(ev, "text", None) or getattr(ev, "model", None) or getattr(ev, "strategy", ""))
    return row


@sessions.command("events")
@click.argument("session_id", callback=utf8_text("session"))
@click.option("--last", "last", type=click.IntRange(0, None), default=20, show_default=True,
              help="Show the last N events of the current chain (0: all).")
@db_option
@json_option
def events_cmd(session_id: str, last: int, db_path: str, as_json: bool) -> None:
    """The events of a session's current chain, with the ids fork and rewind take."""
    with open_existing_store(db_path) as store:
        events = Session.open(store, resolve_session_id(store, session_id)).events()
    rows = [_event_row(se) for se in (events[-last:] if last else events)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no events")
        return
    click.echo(table([[r["id"], r["kind"], r["role"] or "", _preview(r["detail"])] for r in rows],
                     ["id", "kind", "role", "content"]))


def _preview(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _branch_summary(store: SQLiteStore, info: Any) -> dict[str, Any]:
    return {
        "id": info.id,
        "title": info.title,
        "head_event_id": info.head_event_id,
        "parent_session_id": info.parent_session_id,
        "fork_event_id": info.fork_event_id,
        "events": store.event_count(info.id),
        "pending_tool_uses": [{"id": u.id, "name": u.name} for u in store.pending_tool_uses(info.id)],
    }


@sessions.command("fork")
@click.argument("session_id", callback=utf8_text("session"))
@click.option("--at", "at_event", type=int, required=True,
              help="An event id of the session's current chain (see: ctxmem sessions events ID).")
@click.option("--title", default=None, callback=utf8_text("title"),
              help="Title of the new session (default: the parent's).")
@db_option
@json_option
def fork_cmd(session_id: str, at_event: int, title: str | None, db_path: str, as_json: bool) -> None:
    """Start a new session that shares SESSION_ID's history up to event --at.

    SESSION_ID may be a unique prefix of the id, or ``latest``.

    One transaction: the new session exists complete or not at all. The parent is not
    changed. Exits 1 with one line if the session or the event is unknown.
    """
    with open_db(db_path) as store, _event_hint(session_id):
        session_id = resolve_session_id(store, session_id)
        info = Session.open(store, session_id).fork(at_event, title=title).info
        out = _branch_summary(store, info)
    if as_json:
        echo_json(out)
        return
    click.echo(f"forked {session_id} at event {at_event} as session {out['id']} ({out['events']} events)"
               + _pending_note(out))


@sessions.command("rewind")
@click.argument("session_id", callback=utf8_text("session"))
@click.option("--to", "to_event", type=int, required=True,
              help="An event id of the session's current chain: it becomes the head.")
@db_option
@json_option
def rewind_cmd(session_id: str, to_event: int, db_path: str, as_json: bool) -> None:
    """Move SESSION_ID's head back to event --to (one transaction).

    SESSION_ID may be a unique prefix of the id, or ``latest``.

    Later events are not deleted: they stay stored, reachable by id (fork at one of them
    to bring that branch back). Exits 1 with one line if the event is not in the chain.
    """
    with open_db(db_path) as store, _event_hint(session_id):
        session_id = resolve_session_id(store, session_id)
        session = Session.open(store, session_id)
        before = store.event_count(session_id)
        session.rewind(to_event)
        out = _branch_summary(store, session.info)
    out["events_before"] = before
    if as_json:
        echo_json(out)
        return
    click.echo(f"rewound {session_id} to event {to_event}: {out['events']} events in view (was {before}; "
               "later events stay stored)" + _pending_note(out))


@contextmanager
def _event_hint(session_id: str) -> Iterator[None]:
    """An unknown event id: the error says where the ids are listed. Raised (not printed
    here), so the group prints it as every error: one line, exit 1, and with ``--json``
    an ``{"error": ...}`` object on stdout."""
    try:
        yield
    except EventNotFoundError as exc:
        hinted = EventNotFoundError(exc.event_id, exc.session_id)
        hinted.args = (f"no event {exc.event_id} in the current chain of session {session_id!r}; list its "
                       f"event ids with: ctxmem sessions events {session_id} --last 0",)
        raise hinted from None


def _pending_note(out: dict[str, Any]) -> str:
    pending = out["pending_tool_uses"]
    if not pending:
        return ""
    return "; pending: " + ", ".join(f"{p['name']}({p['id']})" for p in pending) + " (no result in this branch yet)"
