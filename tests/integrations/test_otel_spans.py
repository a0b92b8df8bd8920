"""OpenTelemetry GenAI spans: an Agent over the real Anthropic SDK and the loopback server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ctxmem import Agent, MemoryStore, Message, Session, Tool, ToolUseBlock
from ctxmem.clients.anthropic import AnthropicClient
from ctxmem.clients.base import ModelRequest
from ctxmem.clients.loopback import LoopbackServer
from ctxmem.integrations import otel


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    otel.enable(provider)
    yield exp
    otel.disable()


class Policy:
    """Twelve tool calls, then a final answer."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request: ModelRequest) -> Any:
        if self.n < 12:
            self.n += 1
            return Message.assistant(ToolUseBlock(f"toolu_{self.n}", "read", {"n": self.n}))
        return "finished"


def read(args: dict[str, Any]) -> str:
    return f"chunk {args['n']}: " + "data " * 400


def run_agent(server: LoopbackServer, store: MemoryStore) -> Session:
    session = Session.create(store, session_id="conv-42")
    client = otel.traced_client(AnthropicClient("claude-sonnet-4-5", base_url=server.url, api_key="test"))
    agent = Agent(client, session, tools=[Tool("read", read, "Read a chunk", {"type": "object"})],
                  strategy=otel.traced_strategy("masking-200k"), context_window=5000, max_tokens=256)
    agent.run_sync("Read every chunk.")
    return session


def test_build_and_chat_spans_follow_the_genai_conventions(exporter: InMemorySpanExporter) -> None:
    with LoopbackServer(policy=Policy(), window=6000, min_cache_tokens=0) as server:
        run_agent(server, MemoryStore())
        assert not server.rejected
    spans = exporter.get_finished_spans()
    chats = [s for s in spans if s.name == "chat claude-sonnet-4-5"]
    builds = [s for s in spans if s.name == "ctxmem.build masking"]
    assert len(chats) == len(builds) >= 10
    for s in chats:
        a = s.attributes
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "anthropic"
        assert a["gen_ai.request.model"] == "claude-sonnet-4-5" and a["gen_ai.request.max_tokens"] == 256
        assert a["gen_ai.conversation.id"] == "conv-42"
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
        assert a["gen_ai.response.finish_reasons"][0] in ("tool_use", "end_turn")
    # the loopback server simulates Anthropic's prompt cache: reads and writes show up
    assert any(s.attributes["gen_ai.usage.cache_read.input_tokens"] > 0 for s in chats)
    assert any(s.attributes["gen_ai.usage.cache_creation.input_tokens"] > 0 for s in chats)
    # the usage on the span is the server's own report
    assert [s.attributes["gen_ai.usage.input_tokens"] for s in chats][-1] <= 6000
    compacting = [s for s in builds if s.events]
    assert compacting, "the 5000-token window must make masking compact"
    ev = compacting[-1].events[0]
    assert ev.name == "ctxmem.compaction"
    assert ev.attributes["ctxmem.compaction.tokens_before"] > ev.attributes["ctxmem.compaction.tokens_after"]
    assert all(b.attributes["gen_ai.conversation.id"] == "conv-42" for b in builds)


def test_off_unless_enabled() -> None:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    otel.disable()
    assert not otel.enabled()
    with LoopbackServer(policy=Policy(), window=6000) as server:
        session = run_agent(server, MemoryStore())
    assert exp.get_finished_spans() == () and len(session.messages()) > 10
