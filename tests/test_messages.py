"""Messages: frozen blocks, Anthropic/OpenAI conversions and conversation validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given

from ctxmem.errors import InputError, InvalidConversationError
from ctxmem.messages import (
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
    block_texts,
    canonical_json,
    from_anthropic,
    from_openai,
    message_texts,
    reply_from_openai,
    to_anthropic,
    to_openai,
    tool_from_anthropic,
    tool_from_openai,
    tool_to_anthropic,
    tool_to_openai,
    validate_conversation,
)
from generators import conversations, message_lists


def _wire(obj: object) -> object:
    """What a provider or a JSONL file would give back: the value through JSON text."""
    return json.loads(json.dumps(obj, ensure_ascii=False))


# --------------------------------------------------------------------------- values


def test_blocks_and_messages_are_frozen() -> None:
    m = Message.user("hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.role = "assistant"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.content[0].text = "x"  # type: ignore[misc]
    assert isinstance(Message("user", [TextBlock("a")]).content, tuple)  # type: ignore[arg-type]


def test_message_rejects_unknown_role() -> None:
    with pytest.raises(InputError) as exc:
        Message("system", ())  # type: ignore[arg-type]
    assert exc.value.field == "role"
    assert "system" in str(exc.value)


def test_message_accessors() -> None:
    use = ToolUseBlock("t1", "bash", {"cmd": "ls"})
    res = ToolResultBlock("t1", (TextBlock("a"), TextBlock("b")), is_error=True)
    m = Message.assistant(ThinkingBlock("hmm", "sig"), "x", use, "y")
    assert m.text == "xy"
    assert m.tool_uses == (use,)
    assert Message.user(res).tool_results == (res,)
    assert res.text == "a\nb"
    assert hash(use) == hash(ToolUseBlock("t1", "bash", {"cmd": "ls"}))


def test_block_texts_are_the_documented_content() -> None:
    assert block_texts(TextBlock("hello")) == ("hello",)
    assert block_texts(ThinkingBlock("think", "sig")) == ("think",)
    assert block_texts(RedactedThinkingBlock("opaque")) == ("opaque",)
    assert block_texts(ToolUseBlock("id1", "grep", {"b": 1, "a": "é"})) == ("grep", '{"a":"é","b":1}')
    assert block_texts(ToolResultBlock("id1", "out")) == ("out",)
    assert block_texts(ToolResultBlock("id1", (TextBlock("x"), TextBlock("y")))) == ("x\ny",)
    m = Message.assistant("a", ToolUseBlock("i", "n", {}))
    assert list(message_texts(m)) == ["a", "n", "{}"]


def test_canonical_json_is_key_order_independent() -> None:
    assert canonical_json({"b": [1, {"d": 2, "c": 3}], "a": None}) == canonical_json(
        {"a": None, "b": [1, {"c": 3, "d": 2}]}
    )
    assert canonical_json({"k": "ü"}) == '{"k":"ü"}'


# --------------------------------------------------------------------------- Anthropic


@given(conversations(max_turns=5))
def test_anthropic_round_trip_valid_conversations(conv: list[Message]) -> None:
    assert from_anthropic(to_anthropic(conv)) == conv
    assert from_anthropic(_wire(to_anthropic(conv))) == conv  # type: ignore[arg-type]


@given(message_lists())
def test_anthropic_round_trip_any_messages(msgs: list[Message]) -> None:
    assert from_anthropic(_wire(to_anthropic(msgs))) == msgs  # type: ignore[arg-type]


def test_anthropic_shape() -> None:
    msgs = [
        Message.user("task"),
        Message.assistant(ThinkingBlock("t", "s"), "ok", ToolUseBlock("tu1", "bash", {"cmd": "ls"})),
        Message.user(ToolResultBlock("tu1", "boom", is_error=True)),
    ]
    assert to_anthropic(msgs) == [
        {"role": "user", "content": [{"type": "text", "text": "task"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "t", "signature": "s"},
                {"type": "text", "text": "ok"},
                {"type": "tool_use", "id": "tu1", "name": "bash", "input": {"cmd": "ls"}},
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": "boom", "is_error": True}]},
    ]


def test_from_anthropic_accepts_string_content() -> None:
    assert from_anthropic([{"role": "user", "content": "hi"}]) == [Message.user("hi")]


@pytest.mark.parametrize(
    ("obj", "field", "needle"),
    [
        ({"role": "robot", "content": "x"}, "role", "robot"),
        ({"role": "user"}, "content", "content"),
        ({"role": "user", "content": [{"type": "image"}]}, "type", "image"),
        ({"role": "user", "content": [{"type": "text"}]}, "text", "text"),
        ({"role": "user", "content": [{"type": "text", "text": 3}]}, "text", "str"),
        ({"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}, "input", "input"),
        ({"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "b", "input": []}]}, "input", "dict"),
        ({"role": "user", "content": [{"type": "tool_result", "content": "x"}]}, "tool_use_id", "tool_use_id"),
        ({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "is_error": "yes"}]}, "is_error", "true"),
        ({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": [{"type": "image"}]}]}, "content", "image"),
        ({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": 5}]}, "content", "string"),
        ("just a string", None, "object"),
    ],
)
def test_from_anthropic_errors_name_the_field(obj: object, field: str | None, needle: str) -> None:
    with pytest.raises(InputError) as exc:
        from_anthropic([obj])
    assert exc.value.field == field
    assert needle in str(exc.value)


# --------------------------------------------------------------------------- OpenAI


@given(conversations(max_turns=5, openai_compatible=True, allow_pending=True))
def test_openai_round_trip_with_extensions(conv: list[Message]) -> None:
    wire = _wire(to_openai(conv, "be brief", extensions=True))
    system, back = from_openai(wire)  # type: ignore[arg-type]
    assert system == "be brief"
    assert back == conv


@given(conversations(max_turns=5, openai_compatible=True))
def test_openai_without_extensions_drops_only_thinking_and_error_flags(conv: list[Message]) -> None:
    wire = to_openai(conv, extensions=False)
    for m in wire:
        assert not {"reasoning_content", "reasoning_signature", "redacted_reasoning", "is_error"} & set(m)
    system, back = from_openai(_wire(wire))  # type: ignore[arg-type]
    assert system is None

    def plain(m: Message) -> Message:
        blocks = []
        for b in m.content:
            if isinstance(b, ThinkingBlock | RedactedThinkingBlock):
                continue
            if isinstance(b, ToolResultBlock):
                b = ToolResultBlock(b.tool_use_id, b.content, False)
            blocks.append(b)
        return Message(m.role, tuple(blocks))

    assert back == [plain(m) for m in conv]


def test_openai_shape() -> None:
    msgs = [
        Message.user("task"),
        Message.assistant("calling", ToolUseBlock("c1", "ls", {"p": "/"}), ToolUseBlock("c2", "cat", {"f": "a"})),
        Message.user(ToolResultBlock("c2", "A"), ToolResultBlock("c1", "B", is_error=True), "continue"),
    ]
    wire = to_openai(msgs, "sys")
    assert wire[0] == {"role": "system", "content": "sys"}
    assert wire[2]["tool_calls"][1] == {"id": "c2", "type": "function", "function": {"name": "cat", "arguments": '{"f": "a"}'}}
    assert [m["role"] for m in wire] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert wire[3] == {"role": "tool", "tool_call_id": "c2", "content": "A"}
    assert "is_error" not in wire[4]
    assert to_openai(msgs, extensions=True)[3]["is_error"] is True


def test_from_openai_merges_tool_messages_and_system_parts() -> None:
    system, msgs = from_openai([
        {"role": "system", "content": "a"},
        {"role": "developer", "content": [{"type": "text", "text": "b"}]},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "x", "content": "r"},
    ])
    assert system == "a\n\nb"
    assert msgs == [Message.user("q"), Message.assistant(ToolUseBlock("x", "f", {})), Message.user(ToolResultBlock("x", "r"))]


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"role": "robot", "content": "x"}, "role"),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{oops"}}]},
         "tool_calls.function.arguments"),
        ({"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}]},
         "tool_calls.function.arguments"),
        ({"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}, "tool_calls"),
        ({"role": "user", "content": 7}, "content"),
        ({"role": "user", "content": [{"type": "image_url"}]}, "content"),
    ],
)
def test_from_openai_errors_name_the_field(obj: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as exc:
        from_openai([obj])
    assert exc.value.field == field


# --------------------------------------------------------------------------- validation


@given(conversations(max_turns=6))
def test_validate_accepts_generated_conversations(conv: list[Message]) -> None:
    validate_conversation(conv)


@given(conversations(max_turns=6, allow_pending=True))
def test_validate_allow_pending(conv: list[Message]) -> None:
    validate_conversation(conv, allow_pending=True)
    if conv[-1].tool_uses:
        with pytest.raises(InvalidConversationError) as exc:
            validate_conversation(conv)
        assert exc.value.field == "tool_use"
        assert exc.value.line == len(conv)


@given(conversations(min_turns=1, max_turns=6))
def test_validate_rejects_content_before_the_results_it_precedes(conv: list[Message]) -> None:
    """Anthropic answers 400 ("Messages following tool_use blocks must begin with a matching
    number of tool_result blocks") when text comes before a tool_result; the check passed it."""
    for i, m in enumerate(conv):
        if m.tool_results:
            bad = [*conv[:i], Message("user", (TextBlock("typed while the tool ran"), *m.content)), *conv[i + 1 :]]
            with pytest.raises(InvalidConversationError, match="comes before the tool_result") as exc:
                validate_conversation(bad)
            assert (exc.value.line, exc.value.field) == (i + 1, "content[0]")
            # after the results, the same text is fine
            validate_conversation([*conv[:i], Message("user", (*m.content, TextBlock("and then"))), *conv[i + 1 :]])
            return


@given(conversations(min_turns=1, max_turns=6))
def test_validate_rejects_orphan_results(conv: list[Message]) -> None:
    # Re-point the first tool result at an id no tool_use has: an orphan.
    for i, m in enumerate(conv):
        if m.tool_results:
            blocks = list(m.content)
            j = next(k for k, b in enumerate(blocks) if isinstance(b, ToolResultBlock))
            r = blocks[j]
            assert isinstance(r, ToolResultBlock)
            blocks[j] = ToolResultBlock("toolu_orphan", r.content, r.is_error)
            bad = [*conv[:i], Message("user", tuple(blocks)), *conv[i + 1 :]]
            with pytest.raises(InvalidConversationError) as exc:
                validate_conversation(bad)
            assert exc.value.line is not None
            assert "toolu_orphan" in str(exc.value) or exc.value.field == "tool_use"
            # An orphan result placed first, with no assistant before it, is rejected too.
            with pytest.raises(InvalidConversationError):
                validate_conversation([Message("user", (r,)), *conv])
            return


def test_validate_specific_failures() -> None:
    use = ToolUseBlock("a", "f", {})
    with pytest.raises(InvalidConversationError) as exc:
        validate_conversation([Message.user("q"), Message.user(ToolResultBlock("a", "r"))])
    assert (exc.value.line, exc.value.field) == (2, "tool_use_id")
    with pytest.raises(InvalidConversationError) as exc:
        validate_conversation([Message.assistant(use), Message.user("no result"), Message.assistant("x")])
    assert exc.value.field == "tool_use"
    with pytest.raises(InvalidConversationError) as exc:
        validate_conversation([
            Message.assistant(use), Message.user(ToolResultBlock("a", "")),
            Message.assistant(use), Message.user(ToolResultBlock("a", "")),
        ])
    assert exc.value.field == "id"
    # a result for an earlier (not the immediately preceding) assistant message is an orphan
    with pytest.raises(InvalidConversationError):
        validate_conversation([
            Message.assistant(use), Message.user(ToolResultBlock("a", "")),
            Message.assistant("done"), Message.user(ToolResultBlock("a", "again")),
        ])


# --------------------------------------------------------------------------- tools


def test_tool_spec_round_trips() -> None:
    spec = ToolSpec("compile", "Compile the kernel", {"type": "object", "properties": {"path": {"type": "string"}}})
    assert tool_from_anthropic(_wire(tool_to_anthropic(spec))) == spec
    assert tool_from_openai(_wire(tool_to_openai(spec))) == spec
    bare = ToolSpec("noop")
    assert "description" not in tool_to_anthropic(bare)
    assert tool_from_openai(tool_to_openai(bare)) == bare
    with pytest.raises(InputError):
        tool_from_openai({"type": "web_search"})
    with pytest.raises(InputError) as exc:
        tool_from_anthropic({"name": "x"})
    assert exc.value.field == "input_schema"




def test_from_openai_refuses_malformed_fields_naming_them_and_keeps_valid_reasoning() -> None:
    """Called directly (not through a JSONL import): an InputError naming the field, never
    a traceback or a silent rewrite; the reasoning shapes ``message_to_openai`` writes still read."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"n": ' + "9" * 5000 + "}"}}
    with pytest.raises(InputError) as exc:
        from_openai([{"role": "assistant", "content": None, "tool_calls": [call]}])
    assert exc.value.field == "tool_calls.function.arguments" and "not valid JSON" in str(exc.value)
    with pytest.raises(InputError) as exc:
        from_openai([{"role": "assistant", "content": "x", "reasoning_content": "ab", "reasoning_parts": ["a", "b"],
                      "reasoning_signature": ["s"]}])
    assert exc.value.field == "reasoning_signature"
    two = Message("assistant", (ThinkingBlock("a", "s1"), ThinkingBlock("b", "s2"), RedactedThinkingBlock("r"),
                                TextBlock("x")))
    assert from_openai(to_openai([two], extensions=True))[1] == [two]
    one = from_openai([{"role": "assistant", "content": "x", "reasoning_content": "r", "reasoning_signature": None,
                        "reasoning_parts": ["r"], "redacted_reasoning": []}])[1]
    assert one == [Message("assistant", (ThinkingBlock("r", ""), TextBlock("x")))]


def test_a_live_reply_keeps_a_call_with_unparseable_arguments_an_import_refuses_it() -> None:
    """Truncated JSON arguments from a local model raised MalformedResponseError: the paid
    reply was lost and the model never told. An import still refuses them."""
    wire = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "rd", "arguments": '{"path": "a'}},
                           {"id": "c2", "type": "function", "function": {"name": "rd", "arguments": "[1]"}},
                           {"id": "c3", "type": "function", "function": {"name": "rd", "arguments": '{"p": 1}'}}]}
    m = reply_from_openai(wire)
    assert [u.input for u in m.tool_uses] == [{"_unparsed_arguments": '{"path": "a'}, {"_unparsed_arguments": "[1]"},
                                              {"p": 1}]
    with pytest.raises(InputError, match="not valid JSON"):
        from_openai([wire])
    with pytest.raises(InputError, match="must be a JSON object"):
        from_openai([{**wire, "tool_calls": wire["tool_calls"][1:]}])


def test_a_live_reply_makes_no_empty_text_block_an_import_keeps_it() -> None:
    wire = {"role": "assistant", "content": "",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "rd", "arguments": "{}"}}]}
    assert [b.type for b in reply_from_openai(wire).content] == ["tool_use"]
    assert reply_from_openai({"role": "assistant", "content": [{"type": "text", "text": ""}]}).content == ()
    assert from_openai([wire])[1][0].content[0] == TextBlock("")  # the import is unchanged


def test_an_assistant_message_of_only_thinking_is_sent_with_empty_content() -> None:
    """It was sent as {"role": "assistant", "content": null} with no tool_calls, which the
    Chat Completions API does not allow."""
    msgs = [Message.user("go"), Message.assistant(ThinkingBlock("hmm", "")), Message.user("go on")]
    assert to_openai(msgs)[1] == {"role": "assistant", "content": ""}
    assert to_openai([Message.user("go"), Message("assistant", ())])[1] == {"role": "assistant", "content": ""}
    # with tool calls content stays null; ctxmem's own format (extensions: JSONL export) is unchanged
    calls = to_openai([Message.assistant(ToolUseBlock("c1", "rd", {}))])[0]
    assert calls["content"] is None and calls["tool_calls"]
    exported = to_openai(msgs, extensions=True)[1]
    assert exported["content"] is None and exported["reasoning_content"] == "hmm"
    assert from_openai([to_openai(msgs, extensions=True)[1]])[1][0] == msgs[1]
