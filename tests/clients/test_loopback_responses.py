"""The loopback server's OpenAI Responses endpoint, driven by the real ``openai`` SDK."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from ctxmem.clients.base import ModelRequest, Response, Usage
from ctxmem.clients.loopback import Fault, LoopbackServer
from ctxmem.messages import Message, TextBlock, ThinkingBlock, ToolUseBlock

TOOLS = [{"type": "function", "name": "read_log", "description": "Read a build log.",
          "parameters": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}]


def policy(request: ModelRequest) -> Any:
    """Thinks, says it is looking and calls read_log; answers from the tool's output after."""
    last = request.messages[-1]
    if last.tool_results:
        return f"limit is {last.tool_results[0].text} (system: {request.system})"
    return Message.assistant(ThinkingBlock("the log will say", ""), TextBlock("checking the log"),
                             ToolUseBlock("call_a", "read_log", {"name": "build"}))


def client(server: LoopbackServer) -> Any:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="test-key", max_retries=0)


def test_create_returns_items_and_tool_outputs_continue_the_conversation() -> None:
    with LoopbackServer(policy=policy) as server:
        c = client(server)
        first = c.responses.create(model="gpt-loopback", input="Why did the build fail?", tools=TOOLS,
                                   instructions="Be brief.")
        assert first.status == "completed" and first.id.startswith("resp_")
        assert [o.type for o in first.output] == ["reasoning", "message", "function_call"]
        call = first.output[2]
        assert (call.name, json.loads(call.arguments), call.call_id) == ("read_log", {"name": "build"}, "call_a")
        assert first.output[1].content[0].text == "checking the log"
        assert server.requests[0].parsed is not None
        assert server.requests[0].parsed.system == "Be brief."
        assert server.requests[0].parsed.tools[0].name == "read_log"
        # the whole conversation sent back (output items with their ids), plus the tool output
        items = [o.model_dump(exclude_none=True) for o in first.output]
        second = c.responses.create(
            model="gpt-loopback", instructions="Be brief.", tools=TOOLS,
            input=[{"role": "user", "content": "Why did the build fail?"}, *items,
                   {"type": "function_call_output", "call_id": "call_a", "output": "101376 bytes"}])
        assert second.output_text == "limit is 101376 bytes (system: Be brief.)"
        # OpenAI caches prefixes automatically: the repeated items are read from the cache
        assert second.usage is not None and first.usage is not None
        assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens - 1 > 0
        assert second.usage.input_tokens > first.usage.input_tokens
        parsed = server.requests[1].parsed
        assert parsed is not None and [m.role for m in parsed.messages] == ["user", "assistant", "user"]
        assert isinstance(parsed.messages[1].content[0], ThinkingBlock)  # reasoning came back intact
        assert not server.rejected


def test_previous_response_id_chains_without_instructions() -> None:
    with LoopbackServer(policy=policy) as server:
        c = client(server)
        first = c.responses.create(model="m", input="Why?", tools=TOOLS, instructions="first instructions")
        second = c.responses.create(model="m", previous_response_id=first.id, tools=TOOLS, input=[
            {"type": "function_call_output", "call_id": "call_a", "output": "42 KiB"}])
        assert second.output_text == "limit is 42 KiB (system: None)"  # instructions are not carried over
        assert second.previous_response_id == first.id
        with pytest.raises(openai.BadRequestError, match="resp_nope"):
            c.responses.create(model="m", previous_response_id="resp_nope", input="x")
        unstored = c.responses.create(model="m", input="Why?", tools=TOOLS, store=False)
        with pytest.raises(openai.BadRequestError, match="not found"):
            c.responses.create(model="m", previous_response_id=unstored.id, input="x")


def shape(item: Any) -> tuple[Any, ...]:
    """What an output item says, whatever extra fields the SDK's parsed models add."""
    if item.type == "message":
        return item.type, item.status, [(p.type, p.text) for p in item.content]
    if item.type == "function_call":
        return item.type, item.status, item.call_id, item.name, item.arguments
    return item.type, [s.text for s in item.summary], item.encrypted_content


def test_streaming_events_rebuild_the_same_response_in_the_sdk_accumulator() -> None:
    with LoopbackServer(policy=policy) as server:
        c = client(server)
        plain = c.responses.create(model="m", input="Why?", tools=TOOLS)
        with c.responses.stream(model="m", input="Why?", tools=TOOLS) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 3
        assert "response.output_text.delta" in kinds and "response.function_call_arguments.delta" in kinds
        assert "response.reasoning_summary_text.delta" in kinds
        assert [shape(o) for o in final.output] == [shape(o) for o in plain.output]
        # raw stream=True: numbered events, deltas add up to the text and the arguments
        events = list(c.responses.create(model="m", input="Why?", tools=TOOLS, stream=True))
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "checking the log"
        args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        assert json.loads(args) == {"name": "build"}
        assert not server.rejected


def test_invalid_requests_are_refused_as_the_api_does() -> None:
    with LoopbackServer(policy=policy, window=200) as server:
        c = client(server)
        with pytest.raises(openai.BadRequestError, match=r"No tool output found for function call c1\."):  # a call without its output
            c.responses.create(model="m", input=[{"role": "user", "content": "x"}, {
                "type": "function_call", "call_id": "c1", "name": "read_log", "arguments": "{}"}, {
                "role": "user", "content": "y"}])
        with pytest.raises(openai.BadRequestError, match="No tool call found for function call output with call_id zz"):
            c.responses.create(model="m", input=[{"type": "function_call_output", "call_id": "zz", "output": "o"}])
        with pytest.raises(openai.BadRequestError, match="hosted tool"):
            c.responses.create(model="m", input="x", tools=[{"type": "web_search"}])
        with pytest.raises(openai.BadRequestError, match="context window") as info:
            c.responses.create(model="m", input="word " * 1000)
        assert info.value.code == "context_length_exceeded"
        with pytest.raises(openai.BadRequestError, match="arguments are not valid JSON"):
            c.responses.create(model="m", input=[{"role": "user", "content": "x"}, {
                "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{oops"}, {
                "type": "function_call_output", "call_id": "c1", "output": "o"}])
        assert len(server.rejected) == 5


def test_faults_and_scripted_usage_and_incomplete_status() -> None:
    with LoopbackServer(policy=policy) as server:
        c = client(server)
        server.fail_next(Fault.rate_limit(retry_after=None))
        with pytest.raises(openai.RateLimitError):
            c.responses.create(model="m", input="x")
        server.enqueue(Response(content=(TextBlock("cut"),), stop_reason="max_tokens", usage=Usage(5, 16, 7, 0)))
        cut = c.responses.create(model="m", input="x")
        assert cut.status == "incomplete" and cut.incomplete_details is not None
        assert cut.incomplete_details.reason == "max_output_tokens"
        assert cut.usage is not None and (cut.usage.input_tokens, cut.usage.output_tokens) == (12, 16)
        assert cut.usage.input_tokens_details.cached_tokens == 7
