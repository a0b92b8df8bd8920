"""Import and export of sessions as JSONL: one provider-shaped message per line.

Anthropic format (the default): each line is ``{"role": ..., "content": [...]}`` as in the
Messages API. An optional first line ``{"system": "..."}`` carries the system prompt (kept
in the session's metadata; several such lines join in order, separated by a blank line, as
the OpenAI format's ``system`` lines do). OpenAI format: each line is one chat-completions message; the
tool results of one turn are consecutive ``tool`` lines, and a ``system`` line may lead.

Import is all-or-nothing: the whole file is read, decoded and validated first, then the
session and all its events are written in **one** transaction
(``SessionStore.create_session(events=...)``), so a bad file, or a SIGKILL at any moment,
leaves the store with the whole session or without it. Errors are one
:class:`~ctxmem.errors.InputError` naming the file, the line and the field (``x.jsonl:line
7 field 'content[1].input.x': ...; fix: ...``), never a traceback:

* invalid UTF-8, malformed JSON, an unknown role, a ``tool_result`` whose ``tool_use`` is
  not in the preceding assistant message, a reused ``tool_use`` id;
* values ctxmem refuses to store (``ctxmem.events.json_problem``): a lone surrogate
  (``"\\ud800"``), NaN or Infinity, nesting deeper than ``ctxmem.events.MAX_DEPTH`` levels
  (a 10,000-deep line makes ``json`` raise RecursionError; the path is then found with a
  flat scan);
* no message at all: an empty file, blank lines only, or a system prompt only. Nothing is
  created (the CLI says so and exits 1).

A UTF-8 byte-order mark at the start of the file is skipped; a UTF-16/32 one is reported.
Export writes strict JSON (``allow_nan=False``): a NaN stored by an older ctxmem is an
error naming the message and field, never an invalid line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from ctxmem.errors import InputError, InvalidConversationError, StoreError
from ctxmem.events import (
    MAX_DEPTH,
    check_message,
    deep_path,
    format_path,
    json_problem,
    surrogate_at,
)
from ctxmem.messages import (
    Message,
    ToolResultBlock,
    ToolUseBlock,
    from_openai,
    message_from_anthropic,
    to_anthropic,
    to_openai,
    with_results_first,
)
from ctxmem.session import Session, check_session_fields
from ctxmem.store.base import SessionStore
from ctxmem.store.codec import Encoded, InexactNumbers, encode_anthropic_message, gc_paused

_fast_loads: Any
try:  # optional: orjson parses a line ~3x faster than json (see _encode_fast for when it is trusted)
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

Format = Literal["anthropic", "openai"]
FORMATS: tuple[str, ...] = ("anthropic", "openai")


#: Where a line too deep for the parser is reported: a tool input of MAX_DEPTH levels sits
#: under the message, its content list and its block (Anthropic), or under
#: tool_calls/call/function (OpenAI). A line the parser reads is checked for depth where
#: it is stored (the tool inputs, ``check_message``), as the bulk path checks it.
_LINE_DEPTH = {"anthropic": MAX_DEPTH + 3, "openai": MAX_DEPTH + 4}
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xfe\xff", "UTF-16"),
               (b"\xff\xfe", "UTF-16"))


def _strip_bom(data: bytes, source: str) -> bytes:
    """Skip a UTF-8 byte-order mark (valid, and common from Windows editors); refuse the
    marks of other encodings with the fix."""
    if data.startswith(_UTF8_BOM):
        return data[len(_UTF8_BOM):]
    for bom, name in _OTHER_BOMS:
        if data.startswith(bom):
            raise InputError(
                f"the file is {name} (it starts with a {name} byte-order mark); re-encode it as UTF-8",
                source=source,
                line=1,
            )
    return data


def _parse_line(raw: bytes, lineno: int, source: str, max_depth: int) -> Any:
    """One JSON line, refused with the line and field for anything ctxmem cannot store."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"invalid UTF-8 at byte {exc.start} of the line; re-encode the file as UTF-8",
            source=source,
            line=lineno,
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at column {exc.colno}: {exc.msg}", source=source, line=lineno) from None
    except RecursionError:  # nesting deep enough to exhaust the parser's stack
        _refuse_depth(text, source, lineno, max_depth)
    except ValueError as exc:  # an integer past Python's digit limit for int(str)
        raise InputError(_unreadable_number(exc), source=source, line=lineno) from None
    _refuse_problem(json_problem(obj, max_depth=sys.maxsize), source, lineno)
    return obj


def _unreadable_number(exc: ValueError) -> str:
    """The reason for a ValueError of ``json.loads`` other than JSONDecodeError: an integer
    longer than ``sys.get_int_max_str_digits()`` digits (Python refuses to convert it)."""
    if "integer string conversion" in str(exc):
        return (
            f"an integer longer than {sys.get_int_max_str_digits()} digits cannot be read; "
            'fix: write the number as a string (e.g. "12345...")'
        )
    return f"the JSON cannot be read: {exc}"


def _refuse_depth(text: str, source: str, lineno: int, max_depth: int, prefix: str = "") -> None:
    path = deep_path(text, max_depth)
    raise InputError(
        f"JSON nested deeper than {MAX_DEPTH} levels cannot be stored (it could not be read back); "
        "fix: flatten the value or pass it as a string",
        source=source,
        line=lineno,
        field=format_path(path or (), prefix) or None,
    )


def _refuse_problem(problem: tuple[tuple[str | int, ...], str] | None, source: str, lineno: int, prefix: str = "") -> None:
    if problem is not None:
        raise InputError(problem[1], source=source, line=lineno, field=format_path(problem[0], prefix) or None)


def _lines(data: bytes, source: str, max_depth: int = _LINE_DEPTH["anthropic"]) -> Iterator[tuple[int, Any]]:
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        yield lineno, _parse_line(raw, lineno, source, max_depth)


def _check_openai_arguments(obj: Any, source: str, lineno: int) -> None:
    """Tool-call arguments are JSON inside a string: parse and check them as a tool input
    (``from_openai`` would hit RecursionError or keep a NaN)."""
    calls = obj.get("tool_calls") if isinstance(obj, dict) else None
    if not isinstance(calls, list):
        return
    for k, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        args = fn.get("arguments") if isinstance(fn, dict) else None
        prefix = f"tool_calls[{k}].function.arguments"
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except RecursionError:
                _refuse_depth(args, source, lineno, MAX_DEPTH, prefix)
            except json.JSONDecodeError:
                continue  # from_openai reports it
            except ValueError as exc:  # an integer past Python's digit limit
                raise InputError(_unreadable_number(exc), source=source, line=lineno, field=prefix) from None
        if isinstance(args, dict | list):
            _refuse_problem(json_problem(args), source, lineno, prefix)


def nothing_to_import(data: bytes, system: str | None, source: str) -> InputError:
    """The error for a transcript with no message (``data`` as read, BOM and all): what it
    holds instead (nothing, blank lines, a system prompt only), and that nothing was imported."""
    data = data.removeprefix(_UTF8_BOM)
    if not data:
        what = "the file is empty"
    elif not data.strip():
        what = "it holds only blank lines"
    elif system is not None:
        what = "it holds only a system prompt"
    else:
        what = "it holds no message"
    return InputError(
        f"no messages to import: {what}; nothing was imported (a transcript needs at least one user or "
        "assistant line)",
        source=source,
    )


def parse_jsonl(
    data: bytes, *, fmt: Format = "anthropic", source: str = "<input>"
) -> tuple[str | None, list[Message]]:
    """Decode and validate a JSONL transcript into (system prompt, messages)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected anthropic or openai", field="format")
    data = _strip_bom(data, source)
    system: str | None = None
    messages: list[Message] = []
    lines: list[int] = []  # source line of each message, for error messages
    block_lines: list[list[int]] | None = None  # OpenAI: the lines of merged messages' blocks
    if fmt == "anthropic":
        for lineno, obj in _lines(data, source):
            if isinstance(obj, dict) and set(obj) == {"system"}:
                if not isinstance(obj["system"], str):
                    raise InputError("'system' must be a string", source=source, line=lineno, field="system")
                # several system lines join in order, as the OpenAI format's do: none is dropped
                system = obj["system"] if system is None else f"{system}\n\n{obj['system']}"
                continue
            try:
                messages.append(message_from_anthropic(obj))
            except InputError as exc:
                reason = exc.reason
                if exc.field == "role" and isinstance(obj, dict) and obj.get("role") in ("system", "developer", "tool"):
                    reason += " (an OpenAI chat-completions file? import it with --format openai)"
                elif exc.field == "role" and isinstance(obj, dict) and "role" not in obj and "type" in obj:
                    reason += (
                        f" (a line of type {obj['type']!r} and no role: an agent-app transcript such as "
                        "Claude Code's? ctxmem reads one Messages-API object per line; keep the 'message' of its "
                        "user and assistant lines, e.g. jq -c 'select(.type==\"user\" or .type==\"assistant\") "
                        "| .message | {role, content}'; an assistant reply streamed over several lines then needs "
                        "its lines joined)"
                    )
                raise InputError(reason, source=source, line=lineno, field=exc.field) from None
            lines.append(lineno)
    else:
        objs: list[Any] = []
        starts: list[int] = []
        for lineno, obj in _lines(data, source, _LINE_DEPTH["openai"]):
            _check_openai_arguments(obj, source, lineno)
            objs.append(obj)
            starts.append(lineno)
        # Convert one line at a time so an error names its line; then merge the whole list.
        for obj, lineno in zip(objs, starts, strict=True):
            try:
                from_openai([obj])
            except InputError as exc:
                raise InputError(exc.reason, source=source, line=lineno, field=exc.field) from None
        system, messages = from_openai(objs)
        lines, block_lines = _openai_message_lines(objs, starts)
    _validate(messages, lines, source, block_lines)
    _check_content(messages, lines, source, fmt)
    return system, messages


def _check_content(messages: Sequence[Message], lines: Sequence[int], source: str, fmt: str) -> None:
    """The check ``Session.record`` makes (the depth of each tool input), here so that the
    error names the line. OpenAI tool-call arguments were checked on their line already."""
    if fmt != "anthropic":
        return
    for i, m in enumerate(messages):
        try:
            check_message(m)
        except InputError as exc:
            raise InputError(exc.reason, source=source, line=lines[i] if i < len(lines) else None,
                             field=exc.field) from None


def _openai_message_lines(objs: Sequence[Any], starts: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """The source line of each message from_openai makes, and the lines of its blocks where
    they are not all on that line. Mirrors its grouping: tool lines + the following user
    line form one message, whose blocks are the results (one per tool line, in order) then
    the user line's content; the message's line is its first line, its block lines the tool
    lines then the user line (see :func:`_block_line`)."""
    out: list[int] = []
    blocks: list[list[int]] = []
    pending: list[int] = []
    for obj, lineno in zip(objs, starts, strict=True):
        role = obj.get("role")
        if role == "tool":
            pending.append(lineno)
        elif role == "user":
            out.append(pending[0] if pending else lineno)
            blocks.append([*pending, lineno] if pending else [])
            pending = []
        elif role == "assistant":
            if pending:
                out.append(pending[0])
                blocks.append(pending)
                pending = []
            out.append(lineno)
            blocks.append([])
    if pending:
        out.append(pending[0])
        blocks.append(pending)
    return out, blocks


def _validate(messages: Sequence[Message], lines: Sequence[int], source: str,
              block_lines: Sequence[Sequence[int]] | None = None) -> None:
    """Orphan results are errors; a final unanswered tool_use is allowed (an interrupted session).

    ``block_lines[i]``, where given, holds the lines the blocks of message ``i`` came from
    when they are not all on the message's line (an OpenAI file's tool lines and user line,
    merged into one message; see :func:`_block_line`): an error about a block names its line."""
    prev_uses: dict[str, None] = {}  # the last assistant message's calls, in order
    seen: set[str] = set()
    answered: set[str] = set()
    for i, m in enumerate(messages):
        # One pass over the blocks (the tool_uses/tool_results properties build a tuple each).
        uses: list[ToolUseBlock] = []
        results: list[tuple[int, ToolResultBlock]] = []
        for j, b in enumerate(m.content):
            if isinstance(b, ToolUseBlock):
                uses.append(b)
            elif isinstance(b, ToolResultBlock):
                results.append((j, b))
        line = lines[i] if i < len(lines) else None
        own = block_lines[i] if block_lines is not None and i < len(block_lines) else ()
        misplaced = uses if m.role == "user" else [r for _, r in results]
        if misplaced:
            raise InvalidConversationError(
                f"a {misplaced[0].type} block cannot appear in {'an' if m.role == 'assistant' else 'a'} {m.role} message",
                source=source,
                line=line,
                field="content",
            )
        waiting = [u for u in prev_uses if u not in answered]
        if waiting:
            _check_results_open(m, waiting, source, line, own)
        for j, r in results:
            if r.tool_use_id not in prev_uses:
                raise InvalidConversationError(
                    f"tool_result for {r.tool_use_id!r} has no matching tool_use in the preceding assistant "
                    "message; fix the tool_use_id or drop the result",
                    source=source,
                    line=_block_line(own, j, line),
                    field="tool_use_id",
                )
            if r.tool_use_id in answered:
                raise InvalidConversationError(
                    f"tool_use {r.tool_use_id!r} already has a result; a tool call is answered once "
                    "(drop the second result)",
                    source=source,
                    line=_block_line(own, j, line),
                    field="tool_use_id",
                )
            answered.add(r.tool_use_id)
        for u in uses:
            if u.id in seen:
                raise InvalidConversationError(
                    f"tool_use id {u.id!r} is used twice; ids must be unique", source=source, line=line, field="id"
                )
            seen.add(u.id)
        if m.role == "assistant":
            prev_uses = {u.id: None for u in uses}
        elif not results:
            prev_uses = {}


def _block_line(own: Sequence[int], j: int, line: int | None) -> int | None:
    """The source line of block ``j`` of a message on ``line`` whose blocks came from the
    lines ``own``: block ``j`` from ``own[j]``, every block past the last from the last
    (a user line's content after its tool lines' results); all from ``line`` when empty."""
    return own[min(j, len(own) - 1)] if own else line


def _check_results_open(m: Message, waiting: list[str], source: str, line: int | None,
                        own: Sequence[int] = ()) -> None:
    """Only results may follow tool calls until each has one: an assistant message, or a
    block before the last waiting result, is refused (a provider would). ``own``: the lines
    of the message's blocks, where they are not all its ``line`` (see :func:`_block_line`)."""
    left = set(waiting)
    answers = m.role == "user" and any(isinstance(b, ToolResultBlock) and b.tool_use_id in left for b in m.content)
    for j, b in enumerate(m.content if answers else ()):
        if not left:
            return
        if isinstance(b, ToolResultBlock):
            left.discard(b.tool_use_id)
            continue
        raise InvalidConversationError(
            f"content[{j}] comes before the result of tool call {sorted(left)[0]!r}: the message after tool calls "
            "opens with their tool_result blocks; move the other content after them",
            source=source, line=_block_line(own, j, line), field=f"content[{j}]",
        )
    if not answers:
        shown = ", ".join(repr(u) for u in waiting[:5])
        raise InvalidConversationError(
            f"tool call{'s' if len(waiting) > 1 else ''} {shown} of the assistant message before this line "
            f"{'have' if len(waiting) > 1 else 'has'} no result yet: the next line must hold {'their' if len(waiting) > 1 else 'its'} tool_result "
            "blocks (an interrupted session may end with unanswered calls, but nothing may come after them)",
            source=source, line=line, field="role" if m.role == "assistant" else "content",
        )


class _Decline(Exception):
    """The bulk path declines the file: the validating path decides (and names any error)."""


def _fast_objects(data: bytes) -> Iterator[tuple[bytes, Any, bool]]:
    """``(raw line, parsed value, read by orjson)`` for each non-blank line, for the bulk
    paths. Lines are parsed with orjson when it is installed; where it could read a value
    differently from ``json.loads`` it fails (NaN, lone surrogates, invalid UTF-8: that line
    is parsed by json) or yields a float (an integer past 64 bits; the caller decides
    whether a float may matter). A line parsed by json is checked with ``json_problem``
    (surrogates, NaN); a line json cannot read or with a problem raises :class:`_Decline`."""
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
                raise _Decline from None
            if json_problem(obj, max_depth=sys.maxsize) is not None:
                raise _Decline
        yield raw, obj, parsed


_Bulk = tuple[str | None, list[Encoded], list[bool], list[int], dict[str, str]]


def _encode_fast(data: bytes) -> _Bulk | None:
    """The bulk import of an Anthropic transcript, straight from parsed JSON to encoded rows
    (no Message or event objects): (system, encoded, new_message flags, overhead bases,
    tool names), exactly what :func:`parse_jsonl` then ``Session.record_many`` would store;
    or None when any line is not plainly valid, and the validating path must decide
    (which raises its precise error, naming the line and field).

    Lines are read by :func:`_fast_objects`; a line whose tool input holds a float and was
    read by orjson is parsed again by json, so every stored number is json's reading.
    """
    system: str | None = None
    encoded: list[Encoded] = []
    flags: list[bool] = []
    bases: list[int] = []
    names: dict[str, str] = {}
    prev: set[str] = set()
    seen: set[str] = set()
    answered: set[str] = set()
    try:
        for raw, obj, by_orjson in _fast_objects(data):
            if type(obj) is dict and len(obj) == 1 and "system" in obj:
                if type(obj["system"]) is not str:
                    return None
                # several system lines join in order, as the OpenAI format's do: none is dropped
                system = obj["system"] if system is None else f"{system}\n\n{obj['system']}"
                continue
            try:
                prev = encode_anthropic_message(
                    obj, encoded, flags, bases, names, prev, seen, no_floats=by_orjson, answered=answered
                )
            except InexactNumbers:
                obj = json.loads(raw.decode("utf-8"))
                prev = encode_anthropic_message(obj, encoded, flags, bases, names, prev, seen, answered=answered)
    except Exception:  # _Decline, NotSimple, or anything unexpected: the validating path decides
        return None
    return system, encoded, flags, bases, names


def _openai_text_parts(content: Any) -> list[dict[str, str]]:
    """A user message's content as Anthropic text blocks (``_openai_content_blocks``'s
    reading); anything but a string or a list of text parts declines."""
    if type(content) is str:
        return [{"type": "text", "text": content}]
    if type(content) is not list:
        raise _Decline
    out = []
    for p in content:
        if type(p) is not dict or p.get("type") != "text" or type(p.get("text")) is not str:
            raise _Decline
        out.append({"type": "text", "text": p["text"]})
    return out


def _openai_tool_use(call: Any, exact: bool) -> dict[str, Any]:
    """One chat-completions tool call as an Anthropic ``tool_use`` block, as
    ``from_openai`` reads it. Its arguments are parsed by orjson unless ``exact`` (orjson
    refuses NaN and lone surrogates, and the caller re-parses a call whose input holds a
    float, which orjson may read differently), else by json and held to ``json_problem``
    as the validating path holds them."""
    fn = call.get("function") if type(call) is dict else None
    if type(fn) is not dict or type(call.get("id")) is not str:
        raise _Decline
    args = fn.get("arguments") or "{}"
    name = fn.get("name", "")
    if type(args) is not str or type(name) is not str:
        raise _Decline
    parsed: Any = None
    if not exact and _fast_loads is not None:
        try:
            parsed = _fast_loads(args)
        except ValueError:
            exact = True  # NaN, a lone surrogate, ...: json reads it and json_problem names it
    if parsed is None or exact:
        try:
            parsed = json.loads(args)
        except (ValueError, RecursionError):
            raise _Decline from None
        if type(parsed) is dict and json_problem(parsed) is not None:
            raise _Decline
    if type(parsed) is not dict:
        raise _Decline
    return {"type": "tool_use", "id": call["id"], "name": name, "input": parsed}


def _encode_fast_openai(data: bytes) -> _Bulk | None:
    """:func:`_encode_fast` for an OpenAI chat-completions transcript: each line is read
    as ``from_openai`` reads it — ``tool`` lines and the ``user`` line after them become
    one user message (results first), ``system``/``developer`` lines join the system
    prompt — and turned into the Anthropic message it stands for, which is encoded as the
    Anthropic bulk path encodes it. Only plain shapes are taken (string or text-part
    content, string arguments, no reasoning fields); anything else returns None and the
    validating path decides. Stores exactly what :func:`parse_jsonl` then
    ``Session.record_many`` would (tested row for row)."""
    system_parts: list[str] = []
    encoded: list[Encoded] = []
    flags: list[bool] = []
    bases: list[int] = []
    names: dict[str, str] = {}
    prev: set[str] = set()
    seen: set[str] = set()
    answered: set[str] = set()
    pending: list[dict[str, Any]] = []  # blocks of the user message being gathered

    def encode(role: str, blocks: list[dict[str, Any]], no_floats: bool = False) -> None:
        nonlocal prev
        prev = encode_anthropic_message({"role": role, "content": blocks}, encoded, flags, bases, names, prev, seen,
                                        no_floats=no_floats, answered=answered)

    try:
        for _, obj, _ in _fast_objects(data):
            role = obj.get("role") if type(obj) is dict else None
            if role == "tool":
                content, tid, err = obj.get("content", ""), obj.get("tool_call_id"), obj.get("is_error", False)
                if type(tid) is not str or type(err) is not bool:
                    return None
                if type(content) is not str:
                    content = _openai_text_parts(content)
                pending.append({"type": "tool_result", "tool_use_id": tid, "content": content, "is_error": err})
            elif role == "user":
                pending.extend(_openai_text_parts(obj.get("content")))
                if pending:  # a user line with no part and no results before it makes no message
                    encode("user", pending)
                    pending = []
            elif role == "assistant":
                if pending:
                    encode("user", pending)
                    pending = []
                if any(obj.get(k) is not None for k in ("reasoning_content", "redacted_reasoning", "refusal")):
                    return None  # the validating path reads (or refuses) them
                content = obj.get("content")
                blocks = [] if content is None else _openai_text_parts(content)
                calls = obj.get("tool_calls") or []
                if type(calls) is not list:
                    return None
                if not calls:
                    encode("assistant", blocks)
                    continue
                try:  # arguments read by orjson, unless one holds a float (then all by json)
                    encode("assistant", blocks + [_openai_tool_use(call, False) for call in calls], no_floats=True)
                except InexactNumbers:
                    encode("assistant", blocks + [_openai_tool_use(call, True) for call in calls])
            elif role in ("system", "developer") and type(obj.get("content")) is str:
                system_parts.append(obj["content"])
            else:
                return None
        if pending:
            encode("user", pending)
    except Exception:  # _Decline, NotSimple, or anything unexpected: the validating path decides
        return None
    return ("\n\n".join(system_parts) if system_parts else None), encoded, flags, bases, names


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
    """Parse and validate a transcript, then store it as a new session: the session and all
    its events in one transaction (a crash leaves all of it or none). Raises
    :class:`~ctxmem.errors.InputError` naming the line and field, or saying there is no
    message to import; nothing is written then."""
    data = _strip_bom(data, source)
    # The import builds ~20 objects per message, none of them cyclic: pausing the cyclic GC
    # spares collections that would traverse every object the process holds.
    with gc_paused():
        encoder = {"anthropic": _encode_fast, "openai": _encode_fast_openai}.get(fmt)
        bulk = encoder is not None and callable(getattr(store, "append_encoded", None))
        fast = encoder(data) if encoder is not None and bulk else None
        messages: list[Message] = []
        if fast is None:
            system, messages = parse_jsonl(data, fmt=fmt, source=source)
            empty = not messages
        else:
            system, empty = fast[0], not fast[1]
        if empty:
            raise nothing_to_import(data, system, source)
        meta = dict(metadata or {})
        meta.setdefault("source", _display_name(source))
        if system is not None:
            meta["system"] = system
        if fast is None:
            return Session.create(
                store, session_id=session_id, title=title, metadata=meta, tokenizers=tokenizers, messages=messages
            )
        check_session_fields(session_id, title, meta)
        _, encoded, flags, bases, _names = fast
        info = store.create_session(  # type: ignore[call-arg]  # SQLiteStore's bulk form
            session_id=session_id, title=title, metadata=meta, tokenizers=tokenizers, encoded=(encoded, flags, bases)
        )
        return Session(store, info.id)


def _display_name(source: str) -> str:
    """The file's base name as text: bytes of a non-UTF-8 file name (surrogate escapes) are
    shown as U+FFFD, so the metadata stays valid text."""
    name = os.path.basename(source)
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") if surrogate_at(name) >= 0 else name


def import_file(store: SessionStore, path: str | os.PathLike[str], **kw: Any) -> Session:
    """:func:`import_jsonl` of a file (``source`` is its path)."""
    with open(path, "rb") as fh:
        data = fh.read()
    return import_jsonl(store, data, source=str(path), **kw)


def export_lines(session: Session, *, fmt: Format = "anthropic") -> Iterator[str]:
    """The session's messages as JSONL lines (no trailing newline on each), strict JSON.

    Raises :class:`~ctxmem.errors.StoreError` naming the message and field if the session
    holds a value JSON cannot spell (a NaN stored before imports refused it)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected anthropic or openai", field="format")
    system = session.info.metadata.get("system")
    messages = session.messages()
    if fmt == "anthropic":  # a session stored before the door: its results first (OpenAI's tool lines lead anyway)
        messages = [with_results_first(m) if m.role == "user" else m for m in messages]
        objs: list[Any] = ([{"system": system}] if system is not None else []) + to_anthropic(messages)
    else:
        objs = to_openai(messages, system, extensions=True)
    for k, obj in enumerate(objs):
        try:
            yield json.dumps(obj, ensure_ascii=False, allow_nan=False)
        except ValueError:
            problem = json_problem(obj, max_depth=sys.maxsize)
            where = format_path(problem[0]) if problem else "?"
            raise StoreError(
                f"session {session.id}: exported line {k + 1}, field {where!r}: "
                f"{problem[1] if problem else 'not valid JSON'} (stored by an older ctxmem, before such values were "
                "refused); fork or rewind the session before that message to export the rest"
            ) from None
