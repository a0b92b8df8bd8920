from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ctxmem.clients import get_client
from ctxmem.clients.transformers_local import parse_tool_calls
from ctxmem.errors import ConfigError
from ctxmem.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)


def test_tiny_local_model_generates(tiny_model_dir: Path) -> None:
    client = get_client(f"local:{tiny_model_dir}", device="cpu")
    msgs = [Message.user("the kernel compiles")]
    r = client.request_sync(msgs, max_tokens=6, system="be brief")
    assert 1 <= r.usage.output_tokens <= 6
    assert r.usage.input_tokens == asyncio.run(client.count_tokens(msgs, "be brief"))
    assert r.stop_reason in ("max_tokens", "end_turn", "tool_use")
    assert r.model == str(tiny_model_dir)
    # greedy decoding is deterministic
    assert client.request_sync(msgs, max_tokens=6, system="be brief") == r


def test_tool_history_renders_through_the_template(tiny_model_dir: Path) -> None:
    from ctxmem.clients.transformers_local import TransformersClient

    client = TransformersClient(tiny_model_dir, device="cpu")
    history = [
        Message.user("read a"),
        Message.assistant(ToolUseBlock("c1", "read", {"path": "a"})),
        Message("user", (ToolResultBlock("c1", "alpha"),)),
    ]
    prompt = client.render(history, tools=[ToolSpec("read", "Read a file")])
    assert '<tool_call>{"name": "read", "arguments": {"path": "a"}}</tool_call>' in prompt
    assert "<|im_start|>tool\nalpha<|im_end|>" in prompt
    assert "You can call tools" in prompt  # the template has no tools slot: instructions go in the system prompt
    r = client.request_sync(history, tools=[ToolSpec("read")], max_tokens=3)
    assert r.usage.output_tokens <= 3


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match="could not load a transformers model"):
        get_client(f"local:{tmp_path / 'nope'}")


def test_parse_tool_calls_convention() -> None:
    blocks = parse_tool_calls(
        '<think>check a</think>Let me look.<tool_call>{"name": "read", "arguments": {"path": "a"}}</tool_call>'
        '<tool_call>{"name": "bench", "arguments": "{\\"n\\": 2}"}</tool_call>',
        id_prefix="p",
    )
    assert blocks == (
        ThinkingBlock("check a"),
        TextBlock("Let me look."),
        ToolUseBlock("p_0", "read", {"path": "a"}),
        ToolUseBlock("p_1", "bench", {"n": 2}),
    )
    assert parse_tool_calls('```json\n{"name": "ls", "arguments": {}}\n```', id_prefix="q") == (
        ToolUseBlock("q_0", "ls", {}),
    )
    # malformed calls stay visible as text
    assert parse_tool_calls("<tool_call>{oops</tool_call>") == (TextBlock("<tool_call>{oops</tool_call>"),)
    assert parse_tool_calls('{"not": "a call"}') == (TextBlock('{"not": "a call"}'),)
    assert parse_tool_calls("") == ()
