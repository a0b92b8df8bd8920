"""How events map to rows: columns, a content-addressed blob, and the texts that count.

Shared by every backend so that they store, hash and count identically.

* ``message`` → blob = canonical JSON of its Anthropic-shaped blocks.
* ``tool_call`` → blob = canonical JSON of the tool input; id and name in columns.
* ``tool_result`` → blob = the output text itself (``fmt="text"``) or the canonical JSON of
  its text parts (``fmt="blocks"``); the raw text is what FTS indexes and what identical
  outputs share.
* other kinds → no blob; their fields go to the ``meta`` JSON column.

The blob hash (which also keys memoized token counts) is the SHA-256 of the text for a
plain tool output, and of the text prefixed with its kind for every other blob: the same
characters can mean different content (a tool output that happens to equal a message's
stored JSON counts and indexes as that output, not as the message's texts).
"""

from __future__ import annotations

import dataclasses
import gc
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, NamedTuple

from ctxmem.events import (
    MAX_DEPTH,
    Event,
    MessageEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    event_from_payload,
    event_payload,
)
from ctxmem.messages import (
    ContentBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    block_from_anthropic,
    block_texts,
    block_to_anthropic,
)
from ctxmem.store.base import EventCounts, content_hash
from ctxmem.tokens.counting import DEFAULT_OVERHEAD


class Encoded(NamedTuple):
    """One event as rows see it. A NamedTuple, not a frozen dataclass: just as immutable,
    and built ~6x faster (a bulk import builds one per event)."""

    kind: str
    role: str | None
    tool_use_id: str | None
    tool_name: str | None
    is_error: bool
    fmt: str | None
    blob: str | None
    blob_hash: str | None
    meta: str | None
    texts: tuple[str, ...]
    is_tool_output: bool


#: one encoder, built once: ``json.dumps`` with these arguments builds a new encoder per
#: call, which was a third of encode_event's time; the output is identical to
#: :func:`ctxmem.messages.canonical_json` (same class, same arguments).
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


_json_str: Callable[[str], str] = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.py_encode_basestring
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


def _make_canonical_fast() -> Callable[[Any], str]:
    """``_canonical`` for parsed JSON values, without building a C encoder per call (what
    ``JSONEncoder.encode`` does): the same C encoder and arguments, made once. No circular
    check (parsed JSON cannot be circular; a too-deep value raises RecursionError all the
    same), so the encoder keeps no state between calls."""
    if _c_make_encoder is None:  # pragma: no cover - CPython has the C accelerator
        return _canonical
    enc = _c_make_encoder(None, json.JSONEncoder().default, _json_str, None, ":", ",", True, False, True)
    return lambda value: "".join(enc(value, 0))


_canonical_fast = _make_canonical_fast()


def _kind_hash(kind: str, blob: str) -> str:
    return content_hash(f"{kind}\x00{blob}")


def event_texts(event: Event) -> tuple[str, ...]:
    """The texts of an event that count as content tokens (``encode_event(event).texts``),
    without building its blob: what a bulk append hands to the counter before encoding."""
    if isinstance(event, MessageEvent):
        return tuple(t for b in event.blocks for t in block_texts(b))
    if isinstance(event, ToolCallEvent):
        return (event.tool_use.name, _canonical(event.tool_use.input))
    if isinstance(event, ToolResultEvent):
        return (event.result.text,)
    return ()


def encode_event(event: Event, texts: tuple[str, ...] | None = None) -> Encoded:
    """``texts``, when given, must be ``event_texts(event)`` (reused, not recomputed)."""
    if isinstance(event, MessageEvent):
        blob = _canonical([block_to_anthropic(b) for b in event.blocks])
        if texts is None:
            texts = tuple(t for b in event.blocks for t in block_texts(b))
        return Encoded("message", event.role, None, None, False, None, blob, _kind_hash("message", blob), None, texts, False)
    if isinstance(event, ToolCallEvent):
        u = event.tool_use
        # The name is part of the blob so the memoized count (name + input) is keyed by both.
        # canonical_json([name, input]) spelled out, so the input is encoded once.
        input_json = _canonical(u.input) if texts is None else texts[1]
        blob = "[" + _canonical(u.name) + "," + input_json + "]"
        return Encoded(
            "tool_call", "assistant", u.id, u.name, False, None, blob, _kind_hash("tool_call", blob), None, (u.name, input_json),
            False,
        )
    if isinstance(event, ToolResultEvent):
        r = event.result
        if isinstance(r.content, str):
            fmt, blob = "text", r.content
        else:
            fmt, blob = "blocks", _canonical([b.text for b in r.content])
        meta = json.dumps({"duration_s": event.duration_s}) if event.duration_s is not None else None
        return Encoded(
            "tool_result",
            "user",
            r.tool_use_id,
            event.tool_name,
            r.is_error,
            fmt,
            blob,
            content_hash(blob) if fmt == "text" else _kind_hash("tool_result:blocks", blob),
            meta,
            (r.text,) if texts is None else texts,
            True,
        )
    return Encoded(event.kind, None, None, None, False, None, None, None, json.dumps(event_payload(event)), (), False)


class NotSimple(Exception):
    """Raised by :func:`encode_anthropic_message` for anything it does not handle itself
    (an invalid or unusual message): the caller takes the validating path instead."""


class InexactNumbers(NotSimple):
    """A tool input holds a float: raised when the caller asked for it (``no_floats``),
    because its parser may not read numbers exactly as ``json.loads`` does."""


def _check_input(v: Any, depth: int, no_floats: bool) -> None:
    """Raise :class:`NotSimple` for a tool input nested deeper than ``MAX_DEPTH`` (the
    validating path refuses it, naming the field) and, with ``no_floats``,
    :class:`InexactNumbers` for one holding a float. Recursion stops at ``MAX_DEPTH``."""
    t = type(v)
    if t is dict or t is list:
        if depth >= MAX_DEPTH:
            raise NotSimple
        for x in v.values() if t is dict else v:
            _check_input(x, depth + 1, no_floats)
    elif t is float and no_floats:
        raise InexactNumbers


_PER_BLOCK = DEFAULT_OVERHEAD.per_block
_TOOL_USE_OVERHEAD = DEFAULT_OVERHEAD.block(ToolUseBlock("", "", {}))
_TOOL_RESULT_OVERHEAD = DEFAULT_OVERHEAD.block(ToolResultBlock(""))
_TOOL_ERROR_OVERHEAD = DEFAULT_OVERHEAD.block(ToolResultBlock("", "", True))
_THINKING_OVERHEAD = DEFAULT_OVERHEAD.block(ThinkingBlock(""))


def encode_anthropic_message(
    obj: Any,
    out: list[Encoded],
    new_flags: list[bool],
    bases: list[int],
    tool_names: dict[str, str],
    prev_uses: set[str],
    seen: set[str],
    no_floats: bool = False,
    answered: set[str] | None = None,
) -> set[str]:
    """Encode one parsed Anthropic message straight into rows, as
    ``encode_event`` of each event of ``events_from_message(message_from_anthropic(obj))``
    (tool results named as ``Session`` names them, from ``tool_names``) would: the bulk
    import path, which builds no Message, block or event objects. Appends to ``out``,
    ``new_flags`` and ``bases`` (``event_overhead(event, False)``); returns the next
    ``prev_uses`` (the checks of ``ctxmem.jsonl._validate``). With ``no_floats``, a tool
    input holding a float raises :class:`InexactNumbers` (the caller re-parses the line).
    ``answered`` collects the ids with a result (a second result for one is not simple).
    The caller guarantees strings without lone surrogates and finite numbers (orjson
    refuses both; a line parsed by ``json`` is checked with ``ctxmem.events.json_problem``);
    a tool input nested deeper than ``MAX_DEPTH`` raises :class:`NotSimple` here.

    Only plainly valid messages are handled: anything else (a wrong type, a missing field,
    a misplaced or orphan tool block, a reused id, an unusual value) raises
    :class:`NotSimple` *before* anything is appended for it, and the caller falls back to
    the validating path, which stores the same rows or raises the precise error."""
    if type(obj) is not dict:
        raise NotSimple
    role = obj.get("role")
    raw = obj.get("content")
    if role not in ("user", "assistant"):
        raise NotSimple
    if type(raw) is str:
        raw = [{"type": "text", "text": raw}]
    elif type(raw) is not list:
        raise NotSimple
    # Calls of the last assistant message still without a result: only their results may
    # come next (Session refuses anything else with the precise error).
    waiting = {u for u in prev_uses if answered is None or u not in answered}
    if waiting and (role == "assistant" or not raw):
        raise NotSimple
    # First pass: validate and normalise every block (nothing is appended on failure).
    parts: list[tuple[str, Any]] = []
    uses: list[str] = []
    has_results = False
    for b in raw:
        if type(b) is not dict:
            raise NotSimple
        t = b.get("type")
        if waiting and t != "tool_result":
            raise NotSimple
        if t == "text":
            text = b.get("text")
            if type(text) is not str:
                raise NotSimple
            parts.append(("b", ('{"text":' + _json_str(text) + ',"type":"text"}', text, _PER_BLOCK)))
        elif t == "tool_use":
            uid, name, inp = b.get("id"), b.get("name"), b.get("input")
            if role != "assistant" or type(uid) is not str or type(name) is not str or type(inp) is not dict:
                raise NotSimple
            if not uid or not name:
                raise NotSimple
            if uid in seen or uid in uses:
                raise NotSimple
            _check_input(inp, 0, no_floats)
            uses.append(uid)
            parts.append(("u", (uid, name, inp)))
        elif t == "tool_result":
            tid, content, is_error = b.get("tool_use_id"), b.get("content", ""), b.get("is_error", False)
            if role != "user" or type(tid) is not str or type(is_error) is not bool or tid not in prev_uses:
                raise NotSimple
            if answered is not None and (tid in answered or any(p[0] == "r" and p[1][0] == tid for p in parts)):
                raise NotSimple
            if type(content) is str:
                parts.append(("r", (tid, "text", content, content, is_error)))
            elif type(content) is list:
                texts = []
                for part in content:
                    if type(part) is not dict or part.get("type") != "text" or type(part.get("text")) is not str:
                        raise NotSimple
                    texts.append(part["text"])
                parts.append(("r", (tid, "blocks", _canonical_fast(texts), "\n".join(texts), is_error)))
            else:
                raise NotSimple
            waiting.discard(tid)
            has_results = True
        elif t == "thinking":
            thinking, sig = b.get("thinking"), b.get("signature") or ""
            if type(thinking) is not str or type(sig) is not str:
                raise NotSimple
            parts.append(("b", (
                '{"signature":' + _json_str(sig) + ',"thinking":' + _json_str(thinking) + ',"type":"thinking"}',
                thinking,
                _THINKING_OVERHEAD,
            )))
        elif t == "redacted_thinking":
            data = b.get("data")
            if type(data) is not str:
                raise NotSimple
            parts.append(("b", ('{"data":' + _json_str(data) + ',"type":"redacted_thinking"}', data, _PER_BLOCK)))
        else:
            raise NotSimple
    # Second pass: the events, as events_from_message splits the message.
    first = len(out)
    # Each block's canonical JSON (sorted keys, no spaces) is spelled out: the blob is the
    # same string _canonical([block_to_anthropic(b) ...]) gives, built ~3x faster.
    run: list[tuple[str, str, int]] = []

    def flush() -> None:
        blob = "[" + ",".join([d for d, _, _ in run]) + "]"
        out.append(Encoded("message", role, None, None, False, None, blob, _kind_hash("message", blob), None,
                           tuple(x for _, x, _ in run), False))
        new_flags.append(len(out) - 1 == first)
        bases.append(sum(n for _, _, n in run))
        run.clear()

    for kind, v in parts:
        if kind == "b":
            run.append(v)
            continue
        if run:
            flush()
        if kind == "u":
            uid, name, inp = v
            input_json = _canonical_fast(inp)
            blob = "[" + _json_str(name) + "," + input_json + "]"
            out.append(Encoded("tool_call", "assistant", uid, name, False, None, blob, _kind_hash("tool_call", blob), None,
                               (name, input_json), False))
            bases.append(_TOOL_USE_OVERHEAD)
            tool_names[uid] = name
        else:
            tid, fmt, blob, text, is_error = v
            out.append(Encoded("tool_result", "user", tid, tool_names.get(tid), is_error, fmt, blob,
                               content_hash(blob) if fmt == "text" else _kind_hash("tool_result:blocks", blob), None,
                               (text,), True))
            bases.append(_TOOL_ERROR_OVERHEAD if is_error else _TOOL_RESULT_OVERHEAD)
        new_flags.append(len(out) - 1 == first)
    if run or len(out) == first:  # an empty message still marks a message boundary
        flush()
    seen.update(uses)
    if answered is not None:
        answered.update(v[0] for k, v in parts if k == "r")
    if role == "assistant":
        return set(uses)
    return prev_uses if has_results else set()


def _trusted_block(d: dict[str, Any]) -> ContentBlock:
    # Blobs were written by encode_event from validated blocks: skip re-validation on the
    # hot reload path; anything unexpected still goes through the validating decoder.
    t = d.get("type")
    if t == "text":
        return _make.text(d["text"])
    if t == "thinking":
        return ThinkingBlock(d["thinking"], d.get("signature") or "")
    return block_from_anthropic(d)


_loads: Callable[[str], Any]
try:  # optional: orjson parses stored message JSON ~3x faster on the reload path
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads
# orjson is used only for message blobs, which hold strings alone: it reads integers past
# 64 bits as floats and refuses NaN, both of which a tool input may hold and json keeps.
_json_loads = json.loads


def _slot_setters(cls: type, names: Sequence[str]) -> list[Callable[[Any, Any], None]] | None:
    """Setters of the slots of frozen dataclass ``cls``, in the order of ``names``; None
    unless ``names`` are exactly its fields and nothing runs at init (no __post_init__)."""
    try:
        fields = [f.name for f in dataclasses.fields(cls)]
        slots = cls.__dict__["__slots__"]
    except (TypeError, KeyError):  # pragma: no cover - the class changed shape
        return None
    if list(names) != fields or set(fields) != set(slots) or hasattr(cls, "__post_init__"):
        return None  # pragma: no cover - the class changed shape
    return [cls.__dict__[n].__set__ for n in names]


class _Makers(NamedTuple):
    stored: Callable[..., StoredEvent]
    text_result: Callable[..., Event]
    counts: Callable[..., EventCounts]
    tool_call: Callable[..., Event]
    message: Callable[..., Event]
    text: Callable[[str], ContentBlock]
    result_block: Callable[..., ToolResultBlock]
    use_block: Callable[..., ToolUseBlock]


def _fast_makers() -> _Makers | None:
    """Constructors for the objects a reload builds by the thousand, bypassing the frozen
    dataclasses' generated ``__init__`` (one ``object.__setattr__`` call per field, about
    half of decode time): same fields, same values, same objects (tested equal). None if a
    class no longer has the expected shape; the plain constructors are used then."""
    se = _slot_setters(StoredEvent, ("id", "session_id", "parent_id", "created_at", "event"))
    te = _slot_setters(ToolResultEvent, ("result", "tool_name", "duration_s", "new_message", "kind"))
    tb = _slot_setters(ToolResultBlock, ("tool_use_id", "content", "is_error", "type"))
    ec = _slot_setters(EventCounts, ("event_id", "content", "overhead", "cum_content", "cum_overhead"))
    ce = _slot_setters(ToolCallEvent, ("tool_use", "new_message", "kind"))
    ub = _slot_setters(ToolUseBlock, ("id", "name", "input", "type"))
    me = _slot_setters(MessageEvent, ("role", "blocks", "new_message", "kind"))
    xb = _slot_setters(TextBlock, ("text", "type"))
    if se is None or te is None or tb is None or ec is None or ce is None or ub is None or me is None or xb is None:
        return None  # pragma: no cover
    new = object.__new__
    s_id, s_sid, s_parent, s_created, s_event = se
    e_result, e_name, e_duration, e_new, e_kind = te
    b_id, b_content, b_error, b_type = tb
    c_id, c_content, c_overhead, c_cc, c_co = ec
    ce_use, ce_new, ce_kind = ce
    u_id, u_name, u_input, u_type = ub
    m_role, m_blocks, m_new, m_kind = me
    x_text, x_type = xb

    def stored(id: int, session_id: str, parent_id: int | None, created_at: float, event: Event) -> StoredEvent:
        o = new(StoredEvent)
        s_id(o, id)
        s_sid(o, session_id)
        s_parent(o, parent_id)
        s_created(o, created_at)
        s_event(o, event)
        return o

    def result_block(tool_use_id: str, content: str, is_error: bool) -> ToolResultBlock:
        b = new(ToolResultBlock)
        b_id(b, tool_use_id)
        b_content(b, content)
        b_error(b, is_error)
        b_type(b, "tool_result")
        return b

    def use_block(id: str, name: str, input: dict[str, Any]) -> ToolUseBlock:
        u = new(ToolUseBlock)
        u_id(u, id)
        u_name(u, name)
        u_input(u, input)
        u_type(u, "tool_use")
        return u

    def text_result(tool_use_id: str, content: str, is_error: bool, tool_name: str | None, starts: bool) -> Event:
        b = result_block(tool_use_id, content, is_error)
        e = new(ToolResultEvent)
        e_result(e, b)
        e_name(e, tool_name)
        e_duration(e, None)
        e_new(e, starts)
        e_kind(e, "tool_result")
        return e

    def counts(event_id: int, content: int, overhead: int, cum_content: int, cum_overhead: int) -> EventCounts:
        o = new(EventCounts)
        c_id(o, event_id)
        c_content(o, content)
        c_overhead(o, overhead)
        c_cc(o, cum_content)
        c_co(o, cum_overhead)
        return o

    def tool_call(id: str, name: str, input: dict[str, Any], starts: bool) -> Event:
        u = use_block(id, name, input)
        e = new(ToolCallEvent)
        ce_use(e, u)
        ce_new(e, starts)
        ce_kind(e, "tool_call")
        return e

    def message(role: str, blocks: tuple[ContentBlock, ...], starts: bool) -> Event:
        e = new(MessageEvent)
        m_role(e, role)
        m_blocks(e, blocks)
        m_new(e, starts)
        m_kind(e, "message")
        return e

    def text(value: str) -> ContentBlock:
        b = new(TextBlock)
        x_text(b, value)
        x_type(b, "text")
        return b

    return _Makers(stored, text_result, counts, tool_call, message, text, result_block, use_block)


def _plain_makers() -> _Makers:
    def text_result(tool_use_id: str, content: str, is_error: bool, tool_name: str | None, starts: bool) -> Event:
        return ToolResultEvent(ToolResultBlock(tool_use_id, content, is_error), tool_name, None, starts)

    def tool_call(id: str, name: str, input: dict[str, Any], starts: bool) -> Event:
        return ToolCallEvent(ToolUseBlock(id, name, input), starts)

    def message(role: Any, blocks: tuple[ContentBlock, ...], starts: bool) -> Event:
        return MessageEvent(role, blocks, starts)

    return _Makers(StoredEvent, text_result, EventCounts, tool_call, message, TextBlock, ToolResultBlock, ToolUseBlock)


_makers = _fast_makers()
_make = _makers or _plain_makers()


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a reload builds its objects (tens of thousands of acyclic
    ones would otherwise trigger several collections that traverse every object the
    process holds); restored as it was, whatever happens."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


#: items (messages, events, candidates) past which a batch runs with the cyclic GC paused
GC_BATCH = 512


def gc_paused_over(n: int) -> AbstractContextManager[None]:
    """:func:`gc_paused` for a batch of more than :data:`GC_BATCH` items, else nothing.

    A cold pass over a long session (the first build of a strategy, a resumed process
    catching up) allocates tens of thousands of acyclic objects; with the GC on they trigger
    full collections that traverse everything the process holds, the whole history
    included (a 1M-token pipeline-200k resumed in a fresh process: ~15 ms of its retriever's
    first update alone). A turn's few new messages are not worth the toggle."""
    return gc_paused() if n > GC_BATCH else nullcontext()


def decode_counts(rows: Sequence[Sequence[Any]], at: int = 0) -> list[EventCounts]:
    """Rows of (event_id, content, overhead, cum_content, cum_overhead) → EventCounts; with
    ``at``, rows whose columns ``at`` to ``at + 3`` hold the four counts after the event id
    in column 0 (a chain read's joined rows, no tuple built per row), skipping rows
    without counts there."""
    make = _make.counts
    if not at:
        return [make(*r) for r in rows]
    a, b, c, d = at, at + 1, at + 2, at + 3
    return [make(r[0], r[a], r[b], r[c], r[d]) for r in rows if r[a] is not None]


def _has_float(v: Any) -> bool:
    t = type(v)
    if t is dict:
        return any([_has_float(x) for x in v.values()])
    if t is list:
        return any([_has_float(x) for x in v])
    return t is float


def _tool_input(blob: str) -> Any:
    """The input of a stored tool call (its blob is ``[name, input]``), read as ``json``
    reads it: by orjson (~4x faster) unless orjson refuses it (NaN stored by an older
    ctxmem) or it holds a float, which orjson may read differently (an integer past 64
    bits becomes one): then by json."""
    if _loads is not _json_loads:
        try:
            value = _loads(blob)[1]
        except ValueError:
            pass
        else:
            if not _has_float(value):
                return value
    return _json_loads(blob)[1]


def decode_rows(rows: Sequence[Sequence[Any]]) -> list[StoredEvent]:
    """Rows of ``SELECT {_EVENT_COLS}`` → stored events. The hot path of a reload: the
    common kinds are decoded inline (the blobs were written by :func:`encode_event` from
    validated blocks, so they are not validated again)."""
    out: list[StoredEvent] = []
    append = out.append
    loads = _loads
    tool_input = _tool_input
    trusted = _trusted_block
    make = _make
    stored, text_result, tool_call, message = make.stored, make.text_result, make.tool_call, make.message
    for row in rows:
        kind = row[3]
        starts = bool(row[5])
        if kind == "tool_result" and row[9] == "text" and row[11] is None:
            ev: Event = text_result(row[6] or "", row[10] or "", bool(row[8]), row[7], starts)
        elif kind == "tool_call":
            ev = tool_call(row[6] or "", row[7] or "", tool_input(row[10] or '["", {}]'), starts)
        elif kind == "message":
            ev = message(row[4], tuple([trusted(b) for b in loads(row[10] or "[]")]), starts)
        else:
            ev = decode_event(kind, row[4], row[6], row[7], bool(row[8]), row[9], row[10], row[11], starts)
        append(stored(row[0], row[1], row[2], row[12], ev))
    return out


#: the columns :func:`decode_messages` reads: an event, its blob and its stored count
MESSAGE_COLS = (
    "e.id, e.kind, e.role, e.starts_message, e.tool_use_id, e.tool_name, e.is_error, e.fmt, b.text, e.meta, "
    "t.content + t.overhead"
)


def decode_messages(
    rows: Sequence[Sequence[Any]],
) -> tuple[list[Message], list[int], list[tuple[int, ...]]] | None:
    """Rows of ``SELECT {MESSAGE_COLS}`` over a chain, oldest first → its messages, each
    message's count (the sum of its events' stored counts) and its event ids: what
    :func:`decode_rows` and :func:`~ctxmem.events.message_spans` give together, without an
    event object per row (a reload's hot path; the same messages, tested equal). ``None``
    when a content event has no stored count (the caller reads the chain instead)."""
    msgs: list[Message] = []
    counts: list[int] = []
    ids: list[tuple[int, ...]] = []
    loads, tool_input, trusted = _loads, _tool_input, _trusted_block
    result_block, use_block = _make.result_block, _make.use_block
    role: str | None = None
    blocks: list[ContentBlock] = []
    eids: list[int] = []
    n = 0
    for r in rows:
        kind = r[1]
        if kind == "tool_result" and r[7] == "text" and r[9] is None:
            rl: str | None = "user"
            bl: tuple[ContentBlock, ...] = (result_block(r[4] or "", r[8] or "", bool(r[6])),)
        elif kind == "tool_call":
            rl, bl = "assistant", (use_block(r[4] or "", r[5] or "", tool_input(r[8] or '["", {}]')),)
        elif kind == "message":
            rl, bl = r[2], tuple([trusted(b) for b in loads(r[8] or "[]")])
        elif kind == "tool_result":
            ev = decode_event(kind, r[2], r[4], r[5], bool(r[6]), r[7], r[8], r[9], bool(r[3]))
            assert isinstance(ev, ToolResultEvent)
            rl, bl = "user", (ev.result,)
        else:
            continue  # not content: no role, no message (as message_spans skips it)
        if r[10] is None:
            return None
        if role is None or rl != role or r[3]:
            if role is not None:
                msgs.append(Message(role, tuple(blocks)))  # type: ignore[arg-type]
                counts.append(n)
                ids.append(tuple(eids))
            role, blocks, eids, n = rl, [], [], 0
        blocks.extend(bl)
        eids.append(r[0])
        n += r[10]
    if role is not None:
        msgs.append(Message(role, tuple(blocks)))  # type: ignore[arg-type]
        counts.append(n)
        ids.append(tuple(eids))
    return msgs, counts, ids


def decode_event(
    kind: str,
    role: str | None,
    tool_use_id: str | None,
    tool_name: str | None,
    is_error: bool,
    fmt: str | None,
    blob: str | None,
    meta: str | None,
    starts_message: bool,
) -> Event:
    if kind == "message":
        blocks = tuple(_trusted_block(b) for b in json.loads(blob or "[]"))
        return MessageEvent(role, blocks, new_message=starts_message)  # type: ignore[arg-type]
    if kind == "tool_call":
        return ToolCallEvent(
            ToolUseBlock(tool_use_id or "", tool_name or "", json.loads(blob or '["", {}]')[1]), new_message=starts_message
        )
    if kind == "tool_result":
        content: Any = blob or ""
        if fmt == "blocks":
            content = tuple(TextBlock(t) for t in json.loads(content))
        m = json.loads(meta) if meta else {}
        return ToolResultEvent(
            ToolResultBlock(tool_use_id or "", content, bool(is_error)),
            tool_name=tool_name,
            duration_s=m.get("duration_s"),
            new_message=starts_message,
        )
    return event_from_payload(kind, json.loads(meta or "{}"))
