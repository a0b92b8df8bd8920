"""Events: splitting messages into content events and rebuilding them, pending tool calls."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxmem.errors import InvalidConversationError
from ctxmem.events import (
    CompactionEvent,
    MessageEvent,
    ModelCallEvent,
    NoteEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    deep_path,
    event_from_payload,
    event_payload,
    events_from_message,
    format_path,
    json_problem,
    message_spans,
    messages_from_events,
    pending_tool_uses,
    role_of,
)
from ctxmem.messages import Message, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from generators import conversations, message_lists


@given(message_lists())
def test_split_then_rebuild_is_identity(msgs: list[Message]) -> None:
    events = [ev for m in msgs for ev in events_from_message(m)]
    assert messages_from_events(events) == msgs


@given(message_lists())
def test_message_spans_match_messages(msgs: list[Message]) -> None:
    events = [ev for m in msgs for ev in events_from_message(m)]
    stored = [StoredEvent(i + 1, "s", i or None, 0.0, ev) for i, ev in enumerate(events)]
    spans = list(message_spans(stored))
    assert [m for m, _ in spans] == msgs
    ids = [i for _, span in spans for i in span]
    assert ids == [se.id for se in stored]  # every content event belongs to exactly one message


def test_split_follows_block_order() -> None:
    use1, use2 = ToolUseBlock("a", "f", {}), ToolUseBlock("b", "g", {"x": 1})
    m = Message.assistant(ThinkingBlock("t"), "one", use1, "two", use2)
    evs = events_from_message(m)
    assert [type(e) for e in evs] == [MessageEvent, ToolCallEvent, MessageEvent, ToolCallEvent]
    assert [e.new_message for e in evs] == [True, False, False, False]
    assert evs[0] == MessageEvent("assistant", (ThinkingBlock("t"), TextBlock("one")), True)
    # an empty message still marks its boundary
    assert events_from_message(Message("user", ())) == [MessageEvent("user", (), True)]


def test_tool_results_recorded_one_at_a_time_join_one_message() -> None:
    calls = Message.assistant("run both", ToolUseBlock("a", "f", {}), ToolUseBlock("b", "g", {}))
    events = [
        *events_from_message(Message.user("go")),
        *events_from_message(calls),
        ToolResultEvent(ToolResultBlock("b", "B")),  # finished first
        ModelCallEvent("m", 10, 2),  # non-content events do not split messages
        ToolResultEvent(ToolResultBlock("a", "A", is_error=True)),
    ]
    assert messages_from_events(events) == [
        Message.user("go"),
        calls,
        Message.user(ToolResultBlock("b", "B"), ToolResultBlock("a", "A", is_error=True)),
    ]


def test_pending_tool_uses() -> None:
    a, b, c = ToolUseBlock("a", "f", {}), ToolUseBlock("b", "g", {}), ToolUseBlock("c", "h", {})
    events = [
        ToolCallEvent(a), ToolCallEvent(b), ToolResultEvent(ToolResultBlock("a", "")),
        NoteEvent("resume here"), ToolCallEvent(c),
    ]
    assert pending_tool_uses(events) == [b, c]
    assert pending_tool_uses([*events, ToolResultEvent(ToolResultBlock("c", "")),
                              ToolResultEvent(ToolResultBlock("b", ""))]) == []
    assert pending_tool_uses([]) == []


@given(conversations(max_turns=4, allow_pending=True))
def test_pending_only_for_an_unanswered_last_turn(conv: list[Message]) -> None:
    events = [ev for m in conv for ev in events_from_message(m)]
    expected = list(conv[-1].tool_uses) if conv[-1].role == "assistant" else []
    assert pending_tool_uses(events) == expected


@pytest.mark.parametrize(
    "event",
    [
        ModelCallEvent("claude", 1200, 80, 1000, 200, "tool_use", 1.5, 1180, "req_1"),
        ModelCallEvent("gpt"),
        CompactionEvent("masking", 9000, 3000, (1, 2, 3), "summary", "over budget"),
        CompactionEvent("noop", 1, 1),
        NoteEvent("hello", ("a", "b")),
        NoteEvent(""),
    ],
)
def test_payload_round_trip(event: ModelCallEvent | CompactionEvent | NoteEvent) -> None:
    assert event_from_payload(event.kind, event_payload(event)) == event
    assert role_of(event) is None


def test_payload_rejects_content_events() -> None:
    with pytest.raises(TypeError):
        event_payload(MessageEvent("user", ()))
    with pytest.raises(ValueError):
        event_from_payload("message", {})


@pytest.mark.parametrize(
    "message",
    [
        Message("user", (ToolUseBlock("a", "f", {}),)),
        Message("assistant", (TextBlock("x"), ToolResultBlock("a", "out"))),
    ],
)
def test_tool_blocks_in_the_wrong_role_are_rejected(message: Message) -> None:
    # Tool events carry their role; storing these would silently move the block elsewhere.
    with pytest.raises(InvalidConversationError) as exc:
        events_from_message(message)
    assert exc.value.field == "content"


# --------------------------------------------------------------------------- validation at the door

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(blacklist_categories=(), min_codepoint=0, max_codepoint=0xE000), max_size=5),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.tuples(inner),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), inner, max_size=3),
    ),
    max_leaves=12,
)


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    if isinstance(v, list | tuple):
        return 1 + max((_depth(x) for x in v), default=0)
    return 0


def _storable(v: Any, max_depth: int) -> bool:
    """Independent oracle: strict JSON text that is valid UTF-8 and reads back equal."""
    try:
        text = json.dumps(v, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError):
        return False
    return json.loads(text) == v and _depth(v) <= max_depth


@settings(max_examples=300)
@given(value=_values, max_depth=st.integers(1, 4))
def test_json_problem_agrees_with_a_strict_json_round_trip(value: Any, max_depth: int) -> None:
    problem = json_problem(value, max_depth=max_depth)
    assert (problem is None) == _storable(value, max_depth), problem
    if problem is not None:  # the path leads to a value inside
        node = value
        for step in problem[0]:
            node = node[step]


def test_a_10000_deep_value_is_named_without_recursion() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(10_000):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    problem = json_problem({"x": deep})
    assert problem is not None and format_path(problem[0], "input") == "input.x[0][0][0]…(×255)"
    text = '{"a": [{"b": ' + "[" * 10_000 + "]" * 10_000 + "}]}"
    assert format_path(deep_path(text, 300) or ()) == "a[0].b[0][0][0]…(×297)"
    assert format_path(("content", 1, "input", "a b", 0)) == 'content[1].input["a b"][0]'
