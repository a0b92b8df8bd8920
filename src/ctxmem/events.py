"""The append-only, typed session events.

A session is a chain of events linked by parent pointers. Six kinds:

=============  ==============================================================
``message``    content blocks of one role that are not tool blocks (text, thinking)
``tool_call``  one ``tool_use`` block the assistant emitted
``tool_result`` one ``tool_result`` block (the tool's output), stored by content hash
``model_call`` one request to a model: model name, usage, stop reason, latency
``compaction`` a strategy compacted the context: tokens before/after, source ids, summary
``note``       free text (and tags) attached by the user or the agent loop
=============  ==============================================================

A recorded :class:`~ctxmem.messages.Message` is split into content events in block order:
runs of text/thinking blocks become one ``message`` event, each tool block its own event;
the first carries ``new_message=True``. The view rebuilds messages by appending each
content event to the current message and starting a new one at ``new_message`` or a role
change, so recording then viewing gives back exactly the same messages. Tool results
recorded one at a time as tools finish (``new_message=False``) join the user message of
results that follows the assistant's tool calls.

Events never change once written. A compaction does not edit history: it is an event.

**Validated at the door.** What a session stores must be readable back and exportable as
JSON by ctxmem itself, whoever wrote it. :func:`check_message` and :func:`check_event`
(called by :class:`~ctxmem.session.Session` before anything is written, and by the JSONL
importer through :func:`json_problem` on each parsed line) refuse, with an
:class:`~ctxmem.errors.InputError` whose ``field`` is the path of the offending value
(``content[1].input.x``):

* a string holding a lone surrogate (``"\\ud800"``): it has no UTF-8 form, so SQLite, the
  hash and every export would fail on it later;
* a float that is NaN or infinite: JSON has no spelling for it, so an export would be
  invalid JSON;
* JSON nested deeper than :data:`MAX_DEPTH` levels: parsers recurse per level (Python's
  ``json`` hits its recursion limit near 1,000, orjson refuses past 1,024), so a deeper
  value could be stored but never read back; the walk here is iterative;
* a value that is not JSON (a tuple, a set, bytes, an object key that is not a string):
  it would be stored as something else than it was, or not at all.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from ctxmem.errors import InputError, InvalidConversationError
from ctxmem.messages import (
    ContentBlock,
    Message,
    RedactedThinkingBlock,
    Role,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

EventKind: TypeAlias = Literal["message", "tool_call", "tool_result", "model_call", "compaction", "note"]
EVENT_KINDS: tuple[str, ...] = ("message", "tool_call", "tool_result", "model_call", "compaction", "note")
CONTENT_KINDS: frozenset[str] = frozenset({"message", "tool_call", "tool_result"})


@dataclass(frozen=True, slots=True)
class MessageEvent:
    """Content blocks of one role; ``new_message`` starts a new message in the view
    (False: the blocks continue the previous message of the same role)."""

    role: Role
    blocks: tuple[ContentBlock, ...]
    new_message: bool = True
    kind: Literal["message"] = field(default="message", init=False)


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """A ``tool_use`` block the assistant emitted, stored as its own event so a call
    without a result is visible (:meth:`~ctxmem.Session.pending_tool_uses`)."""

    tool_use: ToolUseBlock
    new_message: bool = False
    kind: Literal["tool_call"] = field(default="tool_call", init=False)


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    """A tool's ``tool_result`` (with the tool's name and how long it ran, when known);
    its text is stored once by content hash and indexed for full-text search."""

    result: ToolResultBlock
    tool_name: str | None = None
    duration_s: float | None = None
    new_message: bool = False
    kind: Literal["tool_result"] = field(default="tool_result", init=False)


@dataclass(frozen=True, slots=True)
class ModelCallEvent:
    """One model request's accounting: the provider's usage (input, output, cache read
    and write tokens), stop reason, latency and ctxmem's own estimate of the input
    (what calibration learns from). It adds nothing to the conversation."""

    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    stop_reason: str | None = None
    latency_s: float | None = None
    estimated_input_tokens: int | None = None
    request_id: str | None = None
    kind: Literal["model_call"] = field(default="model_call", init=False)


@dataclass(frozen=True, slots=True)
class CompactionEvent:
    """A strategy's compaction, recorded instead of editing the log: tokens before and
    after, the source events it dropped, masked or summarized, its summary (if any) and
    why. Any context ever sent can be rebuilt from the log plus these events."""

    strategy: str
    tokens_before: int
    tokens_after: int
    source_event_ids: tuple[int, ...] = ()
    summary: str | None = None
    reason: str | None = None
    kind: Literal["compaction"] = field(default="compaction", init=False)


@dataclass(frozen=True, slots=True)
class NoteEvent:
    """Free text with tags (a decision, a marker, a fallback's reason); not part of the
    conversation sent to a model."""

    text: str
    tags: tuple[str, ...] = ()
    kind: Literal["note"] = field(default="note", init=False)


Event: TypeAlias = MessageEvent | ToolCallEvent | ToolResultEvent | ModelCallEvent | CompactionEvent | NoteEvent
ContentEvent: TypeAlias = MessageEvent | ToolCallEvent | ToolResultEvent


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored: with its id, its session, its parent and its time."""

    id: int
    session_id: str
    parent_id: int | None
    created_at: float
    event: Event

    @property
    def kind(self) -> str:
        """The wrapped event's kind: ``message``, ``tool_call``, ``tool_result``,
        ``model_call``, ``compaction`` or ``note``."""
        return self.event.kind


def role_of(event: Event) -> Role | None:
    if isinstance(event, MessageEvent):
        return event.role
    if isinstance(event, ToolCallEvent):
        return "assistant"
    if isinstance(event, ToolResultEvent):
        return "user"
    return None


def _misplaced(b: ToolUseBlock | ToolResultBlock, role: str) -> InvalidConversationError:
    return InvalidConversationError(
        f"a {b.type} block cannot appear in {'an' if role == 'assistant' else 'a'} {role} message "
        f"({'tool_use belongs to assistant' if b.type == 'tool_use' else 'tool_result belongs to user'} messages)",
        field="content",
    )


def events_from_message(message: Message) -> list[ContentEvent]:
    """Split a message into content events, in block order (see the module docstring).

    Raises :class:`~ctxmem.errors.InvalidConversationError` for a ``tool_use`` in a user
    message or a ``tool_result`` in an assistant message: tool events carry their role, so
    storing such a block would silently move it to another message.
    """
    role = message.role
    out: list[ContentEvent] = []
    run: list[ContentBlock] = []
    # One pass: a misplaced block raises when reached (before anything is returned, so the
    # first misplaced block in order is the one reported, as a separate check would).
    for b in message.content:
        if isinstance(b, ToolUseBlock):
            if role != "assistant":
                raise _misplaced(b, role)
            if run:
                out.append(MessageEvent(role, tuple(run), new_message=not out))
                run = []
            out.append(ToolCallEvent(b, new_message=not out))
        elif isinstance(b, ToolResultBlock):
            if role != "user":
                raise _misplaced(b, role)
            if run:
                out.append(MessageEvent(role, tuple(run), new_message=not out))
                run = []
            out.append(ToolResultEvent(b, new_message=not out))
        else:
            run.append(b)
    if run:
        out.append(MessageEvent(role, tuple(run), new_message=not out))
    if not out:  # an empty message still marks a message boundary
        out.append(MessageEvent(message.role, (), new_message=True))
    return out


def _blocks_of(event: ContentEvent) -> tuple[ContentBlock, ...]:
    if isinstance(event, MessageEvent):
        return event.blocks
    if isinstance(event, ToolCallEvent):
        return (event.tool_use,)
    return (event.result,)


def messages_from_events(events: Iterable[Event]) -> list[Message]:
    """Rebuild messages from events (non-content events are skipped)."""
    out: list[Message] = []
    role: Role | None = None
    blocks: list[ContentBlock] = []
    for ev in events:
        r = role_of(ev)
        if r is None:
            continue
        assert isinstance(ev, MessageEvent | ToolCallEvent | ToolResultEvent)
        if role is None or r != role or ev.new_message:
            if role is not None:
                out.append(Message(role, tuple(blocks)))
            role, blocks = r, []
        blocks.extend(_blocks_of(ev))
    if role is not None:
        out.append(Message(role, tuple(blocks)))
    return out


def message_spans(events: Sequence[StoredEvent]) -> Iterator[tuple[Message, list[int]]]:
    """Like :func:`messages_from_events`, also yielding the event ids behind each message."""
    role: Role | None = None
    blocks: list[ContentBlock] = []
    ids: list[int] = []
    for se in events:
        ev = se.event
        r = role_of(ev)
        if r is None:
            continue
        assert isinstance(ev, MessageEvent | ToolCallEvent | ToolResultEvent)
        if role is None or r != role or ev.new_message:
            if role is not None:
                yield Message(role, tuple(blocks)), ids
            role, blocks, ids = r, [], []
        blocks.extend(_blocks_of(ev))
        ids.append(se.id)
    if role is not None:
        yield Message(role, tuple(blocks)), ids


def pending_tool_uses(events: Iterable[Event]) -> list[ToolUseBlock]:
    """Tool calls that never got a result, in call order (what a resume must account for)."""
    calls: dict[str, ToolUseBlock] = {}
    for ev in events:
        if isinstance(ev, ToolCallEvent):
            calls[ev.tool_use.id] = ev.tool_use
        elif isinstance(ev, ToolResultEvent):
            calls.pop(ev.result.tool_use_id, None)
    return list(calls.values())


def event_payload(event: Event) -> dict[str, Any]:
    """JSON-ready fields of a non-content event (content events are stored in columns/blobs)."""
    if isinstance(event, ModelCallEvent):
        return {
            "model": event.model,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "cache_read_tokens": event.cache_read_tokens,
            "cache_write_tokens": event.cache_write_tokens,
            "stop_reason": event.stop_reason,
            "latency_s": event.latency_s,
            "estimated_input_tokens": event.estimated_input_tokens,
            "request_id": event.request_id,
        }
    if isinstance(event, CompactionEvent):
        return {
            "strategy": event.strategy,
            "tokens_before": event.tokens_before,
            "tokens_after": event.tokens_after,
            "source_event_ids": list(event.source_event_ids),
            "summary": event.summary,
            "reason": event.reason,
        }
    if isinstance(event, NoteEvent):
        return {"text": event.text, "tags": list(event.tags)}
    raise TypeError(f"{event.kind} events are stored as content, not payload")


def event_from_payload(kind: str, payload: dict[str, Any]) -> Event:
    if kind == "model_call":
        return ModelCallEvent(**payload)
    if kind == "compaction":
        return CompactionEvent(**{**payload, "source_event_ids": tuple(payload.get("source_event_ids") or ())})
    if kind == "note":
        return NoteEvent(payload["text"], tuple(payload.get("tags") or ()))
    raise ValueError(f"unknown payload event kind {kind!r}")


# --------------------------------------------------------------------------- validation at the door

#: The deepest nesting of a JSON value ctxmem stores (a tool input counts its own object as
#: level 1). Real tool inputs are a few levels deep; the cap keeps every stored value far
#: from the recursion limits of the parsers that read it back (see the module docstring).
MAX_DEPTH = 256

_SURROGATE = re.compile("[\ud800-\udfff]")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_JSON_SCALARS = (str, int, float, bool, type(None))


def surrogate_at(text: str) -> int:
    """Index of the first lone surrogate in ``text``, or -1 (O(1) for ASCII text)."""
    if text.isascii():
        return -1
    m = _SURROGATE.search(text)
    return m.start() if m else -1


def format_path(parts: Sequence[str | int], prefix: str = "") -> str:
    """``("content", 1, "input", "x")`` → ``content[1].input.x`` (after ``prefix``). Keys
    that are not identifiers are quoted; a run of six or more identical steps (a very deep
    value) is shown as three of them and its length: ``x[0][0][0]…(×255)``."""
    steps = [
        f"[{p}]" if isinstance(p, int) else (f".{p}" if _IDENT.match(p) else "[" + json_quote(p) + "]")
        for p in parts
    ]
    out = prefix
    i = 0
    while i < len(steps):
        j = i
        while j < len(steps) and steps[j] == steps[i]:
            j += 1
        run = j - i
        shown = steps[i] * run if run < 6 else steps[i] * 3 + f"…(×{run})"
        out += shown[1:] if not out and shown.startswith(".") else shown
        i = j
    return out


def json_quote(text: str) -> str:
    """A string as a JSON literal, ASCII only (safe to print even with lone surrogates)."""
    return json.dumps(text)


def _surrogate_reason(text: str, at: int) -> str:
    return (
        f"lone surrogate \\u{ord(text[at]):04x} (character {at} of the string) is not text and has no UTF-8 form; "
        "fix: write the complete character (a high+low surrogate pair) or remove it"
    )


def _number_reason(value: float) -> str:
    spelled = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return (
        f"{spelled} is not a JSON number (an export would be invalid JSON); "
        'fix: use null, a finite number or a string such as "NaN"'
    )


def _depth_reason(max_depth: int) -> str:
    return (
        f"JSON nested deeper than {max_depth} levels cannot be stored (it could not be read back); "
        "fix: flatten the value or pass it as a string"
    )


def json_problem(value: Any, *, max_depth: int = MAX_DEPTH) -> tuple[tuple[str | int, ...], str] | None:
    """The first thing in a JSON value (document order) that ctxmem refuses to store, as
    (path inside ``value``, reason with its fix); None when the whole value is storable.

    Refused: lone surrogates (in strings and object keys), NaN and infinities, containers
    nested deeper than ``max_depth`` (``value`` itself, if a container, is level 1), object
    keys that are not strings, and values that are not JSON (tuples, sets, bytes, …).
    Iterative: a 10,000-deep value is reported, never a RecursionError. The common case
    (nothing wrong) is one walk without paths; only a value with a problem is walked
    again to name it.
    """
    if not _may_have_problem(value, max_depth):
        return None
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 0, ())]
    pop, push = stack.pop, stack.append
    while stack:
        v, depth, path = pop()
        t = type(v)
        if t is str:
            at = surrogate_at(v)
            if at >= 0:
                return path, _surrogate_reason(v, at)
        elif t is float:
            if not math.isfinite(v):
                return path, _number_reason(v)
        elif t is dict or (t is not list and isinstance(v, dict)):
            if depth >= max_depth:
                return path, _depth_reason(max_depth)
            items = list(v.items())
            for key, _ in items:
                if not isinstance(key, str):
                    return path, f"object key {key!r} is not a string; fix: use string keys"
                at = surrogate_at(key)
                if at >= 0:
                    return (*path, key), "in the key: " + _surrogate_reason(key, at)
            for key, item in reversed(items):
                push((item, depth + 1, (*path, key)))
        elif t is list or isinstance(v, list):
            if depth >= max_depth:
                return path, _depth_reason(max_depth)
            for i in range(len(v) - 1, -1, -1):
                push((v[i], depth + 1, (*path, i)))
        elif isinstance(v, float):
            if not math.isfinite(v):
                return path, _number_reason(v)
        elif isinstance(v, str):
            at = surrogate_at(v)
            if at >= 0:
                return path, _surrogate_reason(v, at)
        elif not isinstance(v, _JSON_SCALARS):
            return path, (
                f"a {type(v).__name__} is not a JSON value; fix: use a str, number, bool, None, list or dict"
            )
    return None


def _may_have_problem(value: Any, max_depth: int) -> bool:
    """False only if :func:`json_problem` finds nothing: plain JSON types, checked without
    building paths (anything unusual, a subclass included, says True)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push, search = stack.pop, stack.append, _SURROGATE.search
    while stack:
        v, depth = pop()
        t = type(v)
        if t is str:
            if not v.isascii() and search(v):
                return True
        elif t is dict:
            if depth >= max_depth:
                return True
            depth += 1
            for k, x in v.items():
                if type(k) is not str or (not k.isascii() and search(k)):
                    return True
                if type(x) is str:
                    if not x.isascii() and search(x):
                        return True
                elif x is not None and type(x) is not int and type(x) is not bool:
                    push((x, depth))
        elif t is list:
            if depth >= max_depth:
                return True
            depth += 1
            for x in v:
                if type(x) is str:
                    if not x.isascii() and search(x):
                        return True
                elif x is not None and type(x) is not int and type(x) is not bool:
                    push((x, depth))
        elif t is float:
            if v - v != 0.0:  # NaN or an infinity
                return True
        elif v is not None and t is not int and t is not bool:
            return True
    return False


_DEEP_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},]')


def deep_path(text: str, max_depth: int) -> tuple[str | int, ...] | None:
    """Where a JSON text first nests deeper than ``max_depth`` levels: the path of that
    value, found with a flat scan (for a text the parser refused with RecursionError)."""
    # Each open container's position: [key or None] for an object, [index] for an array.
    stack: list[list[Any]] = []
    expect_key = False
    for m in _DEEP_TOKENS.finditer(text):
        tok = m.group()
        if tok == "{" or tok == "[":
            if len(stack) >= max_depth:
                return tuple(f[1] for f in stack if f[1] is not None)
            stack.append(["{", None] if tok == "{" else ["[", 0])
            expect_key = tok == "{"
        elif tok == "}" or tok == "]":
            if stack:
                stack.pop()
            expect_key = False
        elif tok == ",":
            if stack and stack[-1][0] == "[":
                stack[-1][1] += 1
            expect_key = bool(stack) and stack[-1][0] == "{"
        elif expect_key and stack:  # a string in key position
            try:
                stack[-1][1] = json.loads(tok)
            except ValueError:
                stack[-1][1] = tok[1:-1]
            expect_key = False
    return None


def _refuse(field: str, reason: str) -> InputError:
    return InputError(reason, field=field)


def _check_str(value: Any, field: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise _refuse(field, f"must be a string, got {type(value).__name__}")
    at = surrogate_at(value)
    if at >= 0:
        raise _refuse(field, _surrogate_reason(value, at))


def _check_number(
    value: Any, field: str, *, integer: bool = False, optional: bool = False, counts: bool = False
) -> None:
    """``counts``: a count of tokens or seconds, never negative (it would skew totals,
    calibration and cost)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise _refuse(field, f"must be {'an integer' if integer else 'a number'}, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _refuse(field, _number_reason(value))
    if counts and value < 0:
        raise _refuse(field, f"must be 0 or more, got {value}")


def check_block(block: Any, prefix: str = "") -> None:
    """Raise :class:`~ctxmem.errors.InputError` (``field`` = ``prefix`` + the path) unless
    ``block`` is a content block ctxmem can store and export (see the module docstring)."""
    if isinstance(block, TextBlock):
        _check_str(block.text, prefix + "text")
    elif isinstance(block, ToolUseBlock):
        _check_str(block.id, prefix + "id")
        _check_str(block.name, prefix + "name")
        for what, v in (("id", block.id), ("name", block.name)):
            if not v:  # a provider refuses it, and a result could not name its call
                raise _refuse(prefix + what, f"a tool_use {what} must not be empty")
        if not isinstance(block.input, dict):
            raise _refuse(prefix + "input", f"must be a dict (a JSON object), got {type(block.input).__name__}")
        problem = json_problem(block.input)
        if problem is not None:
            raise _refuse(format_path(problem[0], prefix + "input"), problem[1])
    elif isinstance(block, ToolResultBlock):
        _check_str(block.tool_use_id, prefix + "tool_use_id")
        if isinstance(block.content, tuple):
            for j, part in enumerate(block.content):
                if not isinstance(part, TextBlock):
                    raise _refuse(f"{prefix}content[{j}]", f"must be a TextBlock, got {type(part).__name__}")
                _check_str(part.text, f"{prefix}content[{j}].text")
        else:
            _check_str(block.content, prefix + "content")
        if not isinstance(block.is_error, bool):
            raise _refuse(prefix + "is_error", f"must be True or False, got {type(block.is_error).__name__}")
    elif isinstance(block, ThinkingBlock):
        _check_str(block.thinking, prefix + "thinking")
        _check_str(block.signature, prefix + "signature")
    elif isinstance(block, RedactedThinkingBlock):
        _check_str(block.data, prefix + "data")
    else:
        raise _refuse(prefix.rstrip(".") or "content", f"a {type(block).__name__} is not a content block")


def check_message(message: Any, prefix: str = "") -> None:
    """Raise :class:`~ctxmem.errors.InputError` unless every block of ``message`` can be
    stored; the error's ``field`` names the block (``content[1].input.x``)."""
    if not isinstance(message, Message):
        raise _refuse(prefix.rstrip(".") or "message", f"a {type(message).__name__} is not a Message")
    for i, b in enumerate(message.content):
        check_block(b, f"{prefix}content[{i}].")


def check_event(event: Any, prefix: str = "") -> None:
    """Raise :class:`~ctxmem.errors.InputError` unless ``event`` can be stored and exported;
    the error's ``field`` is the path from ``prefix`` (``tool_use.input.x``)."""
    if isinstance(event, MessageEvent):
        for i, b in enumerate(event.blocks):
            check_block(b, f"{prefix}blocks[{i}].")
    elif isinstance(event, ToolCallEvent):
        check_block(event.tool_use, prefix + "tool_use.")
    elif isinstance(event, ToolResultEvent):
        check_block(event.result, prefix + "result.")
        _check_str(event.tool_name, prefix + "tool_name", optional=True)
        _check_number(event.duration_s, prefix + "duration_s", optional=True)
    elif isinstance(event, ModelCallEvent):
        _check_str(event.model, prefix + "model")
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            _check_number(getattr(event, name), prefix + name, integer=True, counts=True)
        _check_number(event.estimated_input_tokens, prefix + "estimated_input_tokens", integer=True, optional=True,
                      counts=True)
        _check_number(event.latency_s, prefix + "latency_s", optional=True, counts=True)
        _check_str(event.stop_reason, prefix + "stop_reason", optional=True)
        _check_str(event.request_id, prefix + "request_id", optional=True)
    elif isinstance(event, CompactionEvent):
        _check_str(event.strategy, prefix + "strategy")
        _check_number(event.tokens_before, prefix + "tokens_before", integer=True)
        _check_number(event.tokens_after, prefix + "tokens_after", integer=True)
        for i, eid in enumerate(event.source_event_ids):
            _check_number(eid, f"{prefix}source_event_ids[{i}]", integer=True)
        _check_str(event.summary, prefix + "summary", optional=True)
        _check_str(event.reason, prefix + "reason", optional=True)
    elif isinstance(event, NoteEvent):
        _check_str(event.text, prefix + "text")
        for i, tag in enumerate(event.tags):
            _check_str(tag, f"{prefix}tags[{i}]")
    else:
        raise _refuse(prefix.rstrip(".") or "event", f"a {type(event).__name__} is not a session event")
