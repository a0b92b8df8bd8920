"""The real ``openai`` SDK against the loopback server."""

from __future__ import annotations

import time

import pytest

from ctxmem.clients import ModelRequest, Response, Usage
from ctxmem.clients.base import MalformedResponseError, ProviderTimeoutError, RetryPolicy
from ctxmem.clients.loopback import Fault, LoopbackServer
from ctxmem.clients.openai_compat import OpenAICompatClient
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


def reader(req: ModelRequest) -> list[TextBlock | ThinkingBlock | ToolUseBlock]:
    results = [r for m in req.messages for r in m.tool_results]
    if len(results) < 2:
        # two parallel calls on the first turn, reasoning on every turn
        if results:
            return [TextBlock("one more")]
        return [
            ThinkingBlock("both files"),
            ToolUseBlock("call_a", "read_file", {"path": "a.txt"}),
            ToolUseBlock("call_b", "read_file", {"path": "b.txt"}),
        ]
    return [TextBlock("contents: " + " | ".join(r.text for r in results))]


def client_for(server: LoopbackServer, **kw: object) -> OpenAICompatClient:
    kw.setdefault("retry", FAST_RETRY)
    return OpenAICompatClient("qwen3", base_url=server.openai_base_url, **kw)


def test_multi_turn_tool_exchange() -> None:
    files = {"a.txt": "alpha", "b.txt": "beta"}
    with LoopbackServer(reader) as server:
        client = client_for(server)
        messages = [Message.user("Read both files.")]
        r = client.request_sync(messages, system="You read files.", tools=[READ], max_tokens=100)
        assert r.stop_reason == "tool_use" and [u.id for u in r.tool_uses] == ["call_a", "call_b"]
        assert isinstance(r.content[0], ThinkingBlock) and r.content[0].thinking == "both files"
        messages += [r.message, Message("user", tuple(ToolResultBlock(u.id, files[u.input["path"]]) for u in r.tool_uses))]
        r2 = client.request_sync(messages, system="You read files.", tools=[READ], max_tokens=100)
        assert r2.text == "contents: alpha | beta" and r2.stop_reason == "end_turn"
        assert not server.rejected and len(server.requests) == 2
        wire = server.requests[1].body
        assert [m["role"] for m in wire["messages"]] == ["system", "user", "assistant", "tool", "tool"]
        assert "reasoning_content" not in wire["messages"][2]  # thinking is not sent back
        assert wire["tools"] == [
            {
                "type": "function",
                "function": {"name": "read_file", "description": "Read a file", "parameters": READ.input_schema},
            }
        ]
        assert wire["max_tokens"] == 100
        # automatic prefix caching: the second prompt re-reads the first
        assert r2.usage.cache_read_tokens == r.usage.prompt_tokens
        assert r2.usage.cache_write_tokens == 0


def test_usage_maps_prompt_and_cached_tokens() -> None:
    reply = Response((TextBlock("hi"),), "end_turn", Usage(input_tokens=30, output_tokens=4, cache_read_tokens=70))
    with LoopbackServer([reply]) as server:
        r = client_for(server).request_sync([Message.user("x")], max_tokens=10)
        wire_usage = server.requests[0]
    assert wire_usage.usage == reply.usage
    assert r.usage == Usage(input_tokens=30, output_tokens=4, cache_read_tokens=70)


def test_orphan_tool_result_is_rejected() -> None:
    with LoopbackServer() as server:
        with pytest.raises(ProviderError, match="400") as info:
            client_for(server).request_sync(
                [Message.user("hi"), Message.assistant("ok"), Message("user", (ToolResultBlock("ghost", "x"),))],
                max_tokens=10,
            )
        assert info.value.status == 400 and len(server.rejected) == 1


@pytest.mark.parametrize("fault", [Fault.rate_limit(), Fault.overloaded(), Fault.server_error()])
def test_retries_then_succeeds(fault: Fault) -> None:
    with LoopbackServer(["ok"]) as server:
        server.fail_next(fault)
        assert client_for(server).request_sync([Message.user("x")], max_tokens=10).text == "ok"
        assert [r.status for r in server.requests] == [{"rate_limit": 429, "overloaded": 503, "server_error": 500}[fault.kind], 200]


def test_rate_limit_after_retries() -> None:
    with LoopbackServer() as server:
        server.fail_next(*[Fault.rate_limit()] * 2)
        with pytest.raises(RateLimitError, match="429"):
            client_for(server, retry=RetryPolicy(max_retries=1, initial_delay=0.001)).request_sync(
                [Message.user("x")], max_tokens=10
            )


def test_context_length_exceeded() -> None:
    with LoopbackServer(window=40) as server:
        client = client_for(server)
        with pytest.raises(ContextLengthExceeded, match="maximum context length is 40 tokens"):
            client.request_sync([Message.user("x" * 400)], max_tokens=10)
        server.fail_next(Fault.prompt_too_long())
        with pytest.raises(ContextLengthExceeded, match="context_length_exceeded"):
            client.request_sync([Message.user("x")], max_tokens=10)


@pytest.mark.parametrize("fault", [Fault.malformed_json(), Fault.malformed_shape()])
def test_malformed_reply(fault: Fault) -> None:
    with LoopbackServer() as server:
        server.fail_next(fault)
        with pytest.raises(MalformedResponseError, match="malformed"):
            client_for(server).request_sync([Message.user("x")], max_tokens=10)


def test_timeout() -> None:
    with LoopbackServer() as server:
        server.fail_next(Fault.hang(10), Fault.hang(10))
        client = client_for(server, timeout=0.2, retry=RetryPolicy(max_retries=1, initial_delay=0.001))
        start = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match=r"timed out after 0\.2s.*gave up after 2 attempts"):
            client.request_sync([Message.user("x")], max_tokens=10)
        assert time.monotonic() - start < 5
        assert len(server.requests) == 2


def test_max_completion_tokens_and_extra_body() -> None:
    with LoopbackServer() as server:
        client = client_for(server, max_tokens_param="max_completion_tokens", extra_body={"top_k": 20})
        client.request_sync([Message.user("x")], max_tokens=7, temperature=0.0)
        body = server.requests[0].body
        assert body["max_completion_tokens"] == 7 and "max_tokens" not in body
        assert body["top_k"] == 20 and body["temperature"] == 0.0
