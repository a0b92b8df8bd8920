"""Import and export of sessions as JSONL: one provider-shaped message per line.

Anthropic format (the default): each line is ``{"role": ..., "content": [...]}`` as in the
Messages API. An optional first line ``{"system": "..."}`` carries the system prompt (kept
in the session's metadata). OpenAI format: each line is one chat-completions message; the
tool results of one turn are consecutive ``tool`` lines, and a ``system`` line may lead.

Import is all-or-nothing: the whole file is read, decoded and validated before one
transaction writes it, so a bad file leaves the store exactly as it was. Errors name the
file, the line and the field: invalid UTF-8, malformed JSON, an unknown role, a
``tool_result`` whose ``tool_use`` is not in the preceding assistant message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from ctxmem.errors import InputError, InvalidConversationError
from ctxmem.messages import (
    Message,
    ToolResultBlock,
    ToolUseBlock,
    from_openai,
    message_from_anthropic,
    to_anthropic,
    to_openai,
)
from ctxmem.session import Session
from ctxmem.store.base import SessionStore
from ctxmem.store.codec import Encoded, InexactNumbers, encode_anthropic_message, gc_paused

_fast_loads: Any
try:  # optional: orjson parses a line ~3x faster than json (see _encode_fast for when it is trusted)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

Format = Literal["anthropic", "openai"]
FORMATS: tuple[str, ...] = ("anthropic", "openai")


def _lines(data: bytes, source: str) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"invalid UTF-8 at byte {exc.start} of the line; re-encode the file as UTF-8",
                source=source,
                line=lineno,
            ) from None
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(
                f"malformed JSON at column {exc.colno}: {exc.msg}", source=source, line=lineno
            ) from None


def parse_jsonl(
    data: bytes, *, fmt: Format = "anthropic", source: str = "<input>"
) -> tuple[str | None, list[Message]]:
    """Decode and validate a JSONL transcript into (system prompt, messages)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected anthropic or openai", field="format")
    system: str | None = None
    messages: list[Message] = []
    lines: list[int] = []  # source line of each message, for error messages
    if fmt == "anthropic":
        for lineno, obj in _lines(data, source):
            if isinstance(obj, dict) and set(obj) == {"system"}:
                if not isinstance(obj["system"], str):
                    raise InputError("'system' must be a string", source=source, line=lineno, field="system")
                system = obj["system"]
                continue
            try:
                messages.append(message_from_anthropic(obj))
            except InputError as exc:
                raise InputError(exc.reason, source=source, line=lineno, field=exc.field) from None
            lines.append(lineno)
    else:
        objs: list[Any] = []
        starts: list[int] = []
        for lineno, obj in _lines(data, source):
            objs.append(obj)
            starts.append(lineno)
        # Convert one line at a time so an error names its line; then merge the whole list.
        for obj, lineno in zip(objs, starts, strict=True):
            try:
                from_openai([obj])
            except InputError as exc:
                raise InputError(exc.reason, source=source, line=lineno, field=exc.field) from None
        system, messages = from_openai(objs)
        lines = _openai_message_lines(objs, starts)
    _validate(messages, lines, source)
    return system, messages


def _openai_message_lines(objs: Sequence[Any], starts: Sequence[int]) -> list[int]:
    # Mirror from_openai's grouping: tool lines + the following user line form one message.
    out: list[int] = []
    pending: int | None = None
    for obj, lineno in zip(objs, starts, strict=True):
        role = obj.get("role")
        if role == "tool":
            pending = pending or lineno
        elif role == "user":
            out.append(pending or lineno)
            pending = None
        elif role == "assistant":
            if pending is not None:
                out.append(pending)
                pending = None
            out.append(lineno)
    if pending is not None:
        out.append(pending)
    return out


def _validate(messages: Sequence[Message], lines: Sequence[int], source: str) -> None:
    """Orphan results are errors; a final unanswered tool_use is allowed (an interrupted session)."""
    prev_uses: set[str] = set()
    seen: set[str] = set()
    for i, m in enumerate(messages):
        # One pass over the blocks (the tool_uses/tool_results properties build a tuple each).
        uses: list[ToolUseBlock] = []
        results: list[ToolResultBlock] = []
        for b in m.content:
            if isinstance(b, ToolUseBlock):
                uses.append(b)
            elif isinstance(b, ToolResultBlock):
                results.append(b)
        line = lines[i] if i < len(lines) else None
        misplaced = uses if m.role == "user" else results
        if misplaced:
            raise InvalidConversationError(
                f"a {misplaced[0].type} block cannot appear in a {m.role} message",
                source=source,
                line=line,
                field="content",
            )
        for r in results:
            if r.tool_use_id not in prev_uses:
                raise InvalidConversationError(
                    f"tool_result for {r.tool_use_id!r} has no matching tool_use in the preceding assistant "
                    "message; fix the tool_use_id or drop the result",
                    source=source,
                    line=line,
                    field="tool_use_id",
                )
        for u in uses:
            if u.id in seen:
                raise InvalidConversationError(
                    f"tool_use id {u.id!r} is used twice; ids must be unique", source=source, line=line, field="id"
                )
            seen.add(u.id)
        if m.role == "assistant":
            prev_uses = {u.id for u in uses}
        elif not results:
            prev_uses = set()


def _encode_fast(data: bytes) -> tuple[str | None, list[Encoded], list[bool], list[int], dict[str, str]] | None:
    """The bulk import of an Anthropic transcript, straight from parsed JSON to encoded rows
    (no Message or event objects): (system, encoded, new_message flags, overhead bases,
    tool names), exactly what :func:`parse_jsonl` then ``Session.record_many`` would store;
    or None when any line is not plainly valid, and the validating path must decide
    (which raises its precise error, naming the line and field).

    Lines are parsed with orjson when it is installed; where it could read a value
    differently from ``json.loads`` it fails (NaN, lone surrogates, invalid UTF-8: that line
    is parsed by json) or yields a float (an integer past 64 bits): a line whose tool input
    holds a float is parsed again by json, so every stored number is json's reading.
    """
    system: str | None = None
    encoded: list[Encoded] = []
    flags: list[bool] = []
    bases: list[int] = []
    names: dict[str, str] = {}
    prev: set[str] = set()
    seen: set[str] = set()
    fast = _fast_loads
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        obj: Any = None
        try:
            obj, parsed = (fast(raw), True) if fast is not None else (None, False)
        except ValueError:  # orjson.JSONDecodeError: json reads the line (or reports it)
            parsed = False
        if not parsed:
            try:
                obj = json.loads(raw.decode("utf-8"))
            except Exception:  # bad UTF-8 or JSON, too deep: the validating path reports it
                return None
        if type(obj) is dict and len(obj) == 1 and "system" in obj:
            if type(obj["system"]) is not str:
                return None
            system = obj["system"]
            continue
        try:
            prev = encode_anthropic_message(obj, encoded, flags, bases, names, prev, seen, no_floats=fast is not None and parsed)
        except InexactNumbers:
            try:
                obj = json.loads(raw.decode("utf-8"))
                prev = encode_anthropic_message(obj, encoded, flags, bases, names, prev, seen)
            except Exception:
                return None
        except Exception:  # NotSimple, or anything unexpected: the validating path decides
            return None
    return system, encoded, flags, bases, names


def import_jsonl(
    store: SessionStore,
    data: bytes,
    *,
    fmt: Format = "anthropic",
    source: str = "<input>",
    title: str | None = None,
    session_id: str | None = None,
    tokenizers: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> Session:
    """Parse, validate, then store a transcript as a new session in one transaction."""
    # The import builds ~20 objects per message, none of them cyclic: pausing the cyclic GC
    # spares collections that would traverse every object the process holds.
    with gc_paused():
        append_encoded = getattr(store, "append_encoded", None)
        fast = _encode_fast(data) if fmt == "anthropic" and append_encoded is not None else None
        messages: list[Message] = []
        if fast is None:
            system, messages = parse_jsonl(data, fmt=fmt, source=source)
        else:
            system = fast[0]
        meta = dict(metadata or {})
        meta.setdefault("source", os.path.basename(source))
        if system is not None:
            meta["system"] = system
        session = Session.create(store, session_id=session_id, title=title, metadata=meta, tokenizers=tokenizers)
        if fast is None:
            session.record_many(messages)
        else:
            assert append_encoded is not None
            _, encoded, flags, bases, names = fast
            session._tool_names.update(names)  # as record_many leaves them
            append_encoded(session.id, encoded, flags, bases)
    return session


def import_file(store: SessionStore, path: str | os.PathLike[str], **kw: Any) -> Session:
    with open(path, "rb") as fh:
        data = fh.read()
    return import_jsonl(store, data, source=str(path), **kw)


def export_lines(session: Session, *, fmt: Format = "anthropic") -> Iterator[str]:
    """The session's messages as JSONL lines (no trailing newline on each)."""
    system = session.info.metadata.get("system")
    messages = session.messages()
    if fmt == "anthropic":
        if system is not None:
            yield json.dumps({"system": system}, ensure_ascii=False)
        for obj in to_anthropic(messages):
            yield json.dumps(obj, ensure_ascii=False)
    elif fmt == "openai":
        for obj in to_openai(messages, system, extensions=True):
            yield json.dumps(obj, ensure_ascii=False)
    else:
        raise InputError(f"unknown format {fmt!r}; expected anthropic or openai", field="format")
