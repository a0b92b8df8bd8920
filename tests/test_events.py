"""Events: splitting messages into content events and rebuilding them, pending tool calls."""

from __future__ import annotations

import pytest
from hypothesis import given

from ctxmem.errors import InvalidConversationError
from ctxmem.events import (
    CompactionEvent,
    MessageEvent,
    ModelCallEvent,
    NoteEvent,
    StoredEvent,
    ToolCallEvent,
    ToolResultEvent,
    event_from_payload,
    event_payload,
    events_from_message,
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
