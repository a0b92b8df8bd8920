"""The Responses-API item converter: round trips, the SDK's own item shapes, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctxmem.errors import InputError
from ctxmem.integrations.responses import from_responses, to_responses
from ctxmem.messages import (
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    validate_conversation,
)

CONVERSATION = [
    Message.user("Compile the kernel."),
    Message.assistant(ThinkingBlock("plan: compile first", "sig-1"), TextBlock("Compiling."),
                      ToolUseBlock("call_1", "compile", {"path": "k.py", "flags": ["-O3"]}),
                      ToolUseBlock("call_2", "check", {})),
    Message("user", (ToolResultBlock("call_1", "ok"), ToolResultBlock("call_2", (TextBlock("a"), TextBlock("b"))),
                     TextBlock("Now benchmark."))),
    Message.assistant(RedactedThinkingBlock("opaque"), TextBlock("Done."), TextBlock("Second part.")),
]


def test_messages_round_trip_through_items() -> None:
    items = to_responses(CONVERSATION, system="You optimize kernels.")
    assert [i["type"] for i in items] == [
        "message", "message", "reasoning", "message", "function_call", "function_call",
        "function_call_output", "function_call_output", "message", "reasoning", "message",
    ]
    system, back = from_responses(items)
    assert system == "You optimize kernels." and back == CONVERSATION
    validate_conversation(back)


texts = st.text(min_size=0, max_size=20)


@given(st.lists(st.tuples(texts, st.booleans(), texts), min_size=1, max_size=6))
def test_round_trip_property(turns: list[tuple[str, bool, str]]) -> None:
    messages: list[Message] = []
    for k, (question, with_call, answer) in enumerate(turns):
        messages.append(Message.user(question))
        if with_call:
            messages.append(Message.assistant(ToolUseBlock(f"c{k}", "tool", {"q": question})))
            messages.append(Message("user", (ToolResultBlock(f"c{k}", answer),)))
        messages.append(Message.assistant(answer))
    assert from_responses(to_responses(messages)) == (None, messages)


def test_agents_sdk_item_shapes_map_onto_messages() -> None:
    items = [
        {"role": "user", "content": "What is alpha?"},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "look it up"}],
         "encrypted_content": "enc"},
        {"arguments": '{"key": "alpha"}', "call_id": "call_1", "name": "lookup", "type": "function_call",
         "id": "__fake_id__", "status": "completed"},
        {"call_id": "call_1", "output": "42", "type": "function_call_output"},
        {"id": "msg_1", "content": [{"annotations": [], "text": "42.", "type": "output_text", "logprobs": []}],
         "role": "assistant", "status": "completed", "type": "message"},
        {"role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
    ]
    system, messages = from_responses(items)
    assert system == "Be brief."
    assert messages == [
        Message.user("What is alpha?"),
        Message.assistant(ThinkingBlock("look it up", "enc"), ToolUseBlock("call_1", "lookup", {"key": "alpha"})),
        Message("user", (ToolResultBlock("call_1", "42"),)),
        Message.assistant("42."),
    ]


def test_unmappable_items_raise_naming_the_item_or_are_skipped() -> None:
    items = [{"role": "user", "content": "hi"}, {"type": "web_search_call", "id": "ws", "status": "completed"}]
    with pytest.raises(InputError, match="item 1: item type 'web_search_call'"):
        from_responses(items)
    assert from_responses(items, strict=False) == (None, [Message.user("hi")])
    with pytest.raises(InputError, match=r"item 0: .*input_image"):
        from_responses([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}])
    with pytest.raises(InputError, match="item 0: function_call 'c' arguments are not valid JSON"):
        from_responses([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}])
