"""The real ``anthropic`` SDK against the loopback server."""

from __future__ import annotations

import asyncio
import time

import pytest

from ctxmem.clients import ModelRequest, Response, Usage
from ctxmem.clients.anthropic import EMPTY_TEXT, AnthropicClient, build_params, request_messages
from ctxmem.clients.base import (
    CacheBreakpoints,
    MalformedResponseError,
    ProviderTimeoutError,
    RetryPolicy,
    ThinkingConfig,
)
from ctxmem.clients.loopback import Fault, LoopbackServer
from ctxmem.errors import ContextLengthExceeded, ProviderError, RateLimitError
from ctxmem.messages import (
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

FAST_RETRY = RetryPolicy(max_retries=3, initial_delay=0.001, max_delay=0.01)

READ = ToolSpec("read_file", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}})


def file_reader_policy(req: ModelRequest) -> list[TextBlock | ThinkingBlock | ToolUseBlock]:
    """Read a.txt, then b.txt, then answer with what was read."""
    results = [r for m in req.messages for r in m.tool_results]
    n = len(results)
    if n < 2:
        path = ["a.txt", "b.txt"][n]
        return [ThinkingBlock(f"I need {path}"), ToolUseBlock(f"toolu_{n:02d}", "read_file", {"path": path})]
    return [TextBlock("contents: " + " | ".join(r.text for r in results))]


def client_for(server: LoopbackServer, **kw: object) -> AnthropicClient:
    kw.setdefault("retry", FAST_RETRY)
    return AnthropicClient("claude-test", base_url=server.url, **kw)


def run_tool_loop(client: AnthropicClient, *, thinking: ThinkingConfig | None = None) -> list[Message]:
    files = {"a.txt": "alpha", "b.txt": "beta"}
    messages = [Message.user("Read both files.")]
    for _ in range(5):
        r = client.request_sync(
            messages,
            system="You read files.",
            tools=[READ],
            max_tokens=256,
            thinking=thinking,
            cache_breakpoints=CacheBreakpoints(),
        )
        messages.append(r.message)
        if r.stop_reason != "tool_use":
            break
        messages.append(
            Message("user", tuple(ToolResultBlock(u.id, files[u.input["path"]]) for u in r.tool_uses))
        )
    return messages


def test_multi_turn_tool_exchange_with_thinking_and_cache_usage() -> None:
    with LoopbackServer(file_reader_policy) as server:
        client = client_for(server)
        messages = run_tool_loop(client, thinking=ThinkingConfig(1024))
        assert messages[-1].text == "contents: alpha | beta"
        assert len(server.requests) == 3 and not server.rejected
        # thinking came back with the server's signature and was sent back unmodified
        first = messages[1].content[0]
        assert isinstance(first, ThinkingBlock) and first.signature == server.sign(first.thinking)
        wire = server.requests[2].body
        assert wire["messages"][1]["content"][0] == {
            "type": "thinking",
            "thinking": "I need a.txt",
            "signature": server.sign("I need a.txt"),
        }
        assert wire["thinking"] == {"type": "enabled", "budget_tokens": 1024}
        # cache: the first turn writes, later turns read the previous prefix
        usages = [r.usage for r in server.requests]
        assert usages[0] is not None and usages[0].cache_read_tokens == 0 and usages[0].cache_write_tokens > 0
        assert usages[1] is not None and usages[1].cache_read_tokens == usages[0].prompt_tokens


def test_usage_fields_map_from_the_wire() -> None:
    usage = Usage(input_tokens=7, output_tokens=3, cache_read_tokens=1000, cache_write_tokens=50)
    with LoopbackServer([Response((TextBlock("hi"),), "end_turn", usage)]) as server:
        r = client_for(server).request_sync([Message.user("x")], max_tokens=10)
    assert r.usage == usage
    assert server.requests[0].status == 200


def test_modified_thinking_is_rejected_like_the_provider() -> None:
    with LoopbackServer(file_reader_policy) as server:
        client = client_for(server)
        r = client.request_sync([Message.user("go")], tools=[READ], max_tokens=64)
        tampered = Message(
            "assistant", (ThinkingBlock("I need something else", r.content[0].signature), *r.content[1:])
        )
        with pytest.raises(ProviderError, match="Invalid `signature`") as info:
            client.request_sync(
                [Message.user("go"), tampered, Message("user", (ToolResultBlock("toolu_00", "alpha"),))],
                tools=[READ],
                max_tokens=64,
            )
        assert info.value.status == 400
        assert len(server.rejected) == 1


def test_thinking_must_lead_a_tool_loop_when_enabled() -> None:
    with LoopbackServer(["done"]) as server:
        client = client_for(server)
        history = [
            Message.user("go"),
            Message.assistant(ToolUseBlock("toolu_1", "read_file", {"path": "a"})),
            Message("user", (ToolResultBlock("toolu_1", "alpha"),)),
        ]
        with pytest.raises(ProviderError, match="Expected `thinking`"):
            client.request_sync(history, tools=[READ], max_tokens=64, thinking=ThinkingConfig(512))
        assert client.request_sync(history, tools=[READ], max_tokens=64).text == "done"


def test_server_rejects_orphan_tool_result_and_unanswered_tool_use() -> None:
    with LoopbackServer() as server:
        client = client_for(server)
        with pytest.raises(ProviderError, match="no tool_use in the preceding assistant message"):
            client.request_sync(
                [Message.user("hi"), Message.assistant("ok"), Message("user", (ToolResultBlock("ghost", "x"),))],
                max_tokens=10,
            )
        with pytest.raises(ProviderError, match="never answered"):
            client.request_sync(
                [Message.user("hi"), Message.assistant(ToolUseBlock("toolu_1", "read_file", {}))], max_tokens=10
            )
        assert len(server.rejected) == 2


@pytest.mark.parametrize("fault", [Fault.rate_limit(), Fault.overloaded(), Fault.server_error()])
def test_retries_transient_errors_then_succeeds(fault: Fault) -> None:
    with LoopbackServer(["finally"]) as server:
        server.fail_next(fault, fault)
        r = client_for(server).request_sync([Message.user("x")], max_tokens=10)
        assert r.text == "finally"
        assert [q.status for q in server.requests][:2] == [{"rate_limit": 429, "overloaded": 529, "server_error": 500}[fault.kind]] * 2
        assert server.requests[-1].status == 200


def test_rate_limit_after_retries_is_typed() -> None:
    with LoopbackServer() as server:
        server.fail_next(*[Fault.overloaded()] * 3)
        client = client_for(server, retry=RetryPolicy(max_retries=2, initial_delay=0.001))
        with pytest.raises(RateLimitError, match=r"529 \(overloaded_error\).*gave up after 3 attempts") as info:
            client.request_sync([Message.user("x")], max_tokens=10)
        assert info.value.status == 529 and info.value.provider == "anthropic"


def test_prompt_too_long_becomes_context_length_exceeded() -> None:
    with LoopbackServer() as server:
        server.fail_next(Fault.prompt_too_long())
        with pytest.raises(ContextLengthExceeded, match="prompt is too long") as info:
            client_for(server).request_sync([Message.user("x")], max_tokens=10)
        assert info.value.status == 400
        assert len(server.requests) == 1  # never retried


def test_window_is_enforced_with_the_servers_counter() -> None:
    with LoopbackServer(window=50, counter=lambda s: len(s.split())) as server:
        client = client_for(server)
        assert client.request_sync([Message.user("short")], max_tokens=10).stop_reason == "end_turn"
        with pytest.raises(ContextLengthExceeded, match=r"prompt is too long: \d+ tokens > 50 maximum"):
            client.request_sync([Message.user("word " * 60)], max_tokens=10)


@pytest.mark.parametrize("fault", [Fault.malformed_json(), Fault.malformed_shape()])
def test_malformed_reply_is_a_typed_error(fault: Fault) -> None:
    with LoopbackServer() as server:
        server.fail_next(fault)
        with pytest.raises(MalformedResponseError, match=r"malformed reply from http://127\.0\.0\.1"):
            client_for(server).request_sync([Message.user("x")], max_tokens=10)


def test_timeout_is_a_typed_error() -> None:
    with LoopbackServer() as server:
        server.fail_next(Fault.hang(10))
        client = client_for(server, timeout=0.3, retry=RetryPolicy(max_retries=0))
        start = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match=r"timed out after 0\.3s"):
            client.request_sync([Message.user("x")], max_tokens=10)
        assert time.monotonic() - start < 5


def test_count_tokens_matches_the_prompt_usage() -> None:
    with LoopbackServer() as server:
        client = client_for(server)
        msgs = [Message.user("count me please")]
        n = asyncio.run(client.count_tokens(msgs, system="sys", tools=[READ]))
        r = client.request_sync(msgs, system="sys", tools=[READ], max_tokens=10)
        assert n == r.usage.prompt_tokens > 0


def test_cache_control_placement() -> None:
    msgs = [
        Message.user("a"),
        Message.assistant(ThinkingBlock("t", "sig"), ToolUseBlock("toolu_1", "read_file", {})),
        Message("user", (ToolResultBlock("toolu_1", "x"),)),
        Message.assistant(ThinkingBlock("only thinking", "sig")),
    ]
    p = build_params(
        "m",
        msgs,
        system="sys",
        tools=[READ, ToolSpec("write")],
        max_tokens=10,
        temperature=0.5,
        cache_breakpoints=CacheBreakpoints(messages=(0, 1, 2, -1), ttl="1h"),
        thinking=None,
    )
    cc = {"type": "ephemeral", "ttl": "1h"}
    assert p["system"] == [{"type": "text", "text": "sys", "cache_control": cc}]
    assert "cache_control" not in p["tools"][0] and p["tools"][1]["cache_control"] == cc
    # at most four breakpoints: system + tools + the last two requested messages
    marked = [i for i, m in enumerate(p["messages"]) if any("cache_control" in b for b in m["content"])]
    assert marked == [2]  # message 3 holds only thinking, which cannot carry cache_control
    assert "cache_control" not in p["messages"][1]["content"][0]
    assert p["temperature"] == 0.5
    assert "cache_control" not in str(build_params("m", msgs, system="s", tools=None, max_tokens=1, temperature=None, cache_breakpoints=None, thinking=None))


def test_sync_and_async_calls_share_a_client() -> None:
    with LoopbackServer() as server:
        client = client_for(server)

        async def two() -> list[str]:
            rs = await asyncio.gather(*(client.request([Message.user(str(i))], max_tokens=5) for i in range(2)))
            return [r.text for r in rs]

        assert len(asyncio.run(two())) == 2
        assert client.request_sync([Message.user("x")], max_tokens=5).text
        assert asyncio.run(two())


def test_blank_text_blocks_of_the_history_are_not_sent() -> None:
    """An OpenAI-compatible server's content "" was recorded as TextBlock(""), and the
    Messages API refuses it ("text content blocks must be non-empty")."""
    msgs = [
        Message.user("go"),
        Message.assistant(TextBlock(""), ToolUseBlock("c1", "rd", {})),
        Message("user", (ToolResultBlock("c1", (TextBlock("out"), TextBlock(" "))),)),
        Message.assistant(TextBlock("\n")),
        Message("user", (ToolResultBlock("c9", (TextBlock(""),)), TextBlock("next"))),
    ]
    wire = request_messages(msgs)
    assert wire[1] == {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "rd", "input": {}}]}
    assert wire[2]["content"][0]["content"] == [{"type": "text", "text": "out"}]
    assert wire[3] == {"role": "assistant", "content": [{"type": "text", "text": EMPTY_TEXT}]}  # never empty
    assert wire[4]["content"][0]["content"] == "" and wire[4]["content"][1] == {"type": "text", "text": "next"}
    assert len(wire) == len(msgs)  # no message dropped: breakpoint indices still hold
    p = build_params("m", msgs, system=None, tools=None, max_tokens=5, temperature=None,
                     cache_breakpoints=CacheBreakpoints(messages=(1,)), thinking=None)
    assert p["messages"][1]["content"][0]["cache_control"] == {"type": "ephemeral"}
