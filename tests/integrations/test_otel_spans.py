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


# --------------------------------------------------------------------------- Agent(tracer=...)


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exp))
    return provider, exp


def test_agent_tracer_gives_a_run_span_and_a_turn_span_with_the_build_and_the_call() -> None:
    otel.disable()  # the agent's own hook does not depend on the global switch
    provider, exp = _provider()
    with LoopbackServer(policy=Policy(), window=6000, min_cache_tokens=0) as server:
        session = Session.create(MemoryStore(), session_id="conv-7")
        client = AnthropicClient("claude-sonnet-4-5", base_url=server.url, api_key="test")
        agent = Agent(client, session, tools=[Tool("read", read, "Read a chunk", {"type": "object"})],
                      preset="masking-200k", context_window=5000, max_tokens=256, tracer=provider)
        result = agent.run_sync("Read every chunk.")
        assert not server.rejected
    spans = exp.get_finished_spans()
    (run,) = [s for s in spans if s.name == "invoke_agent ctxmem"]
    turns = [s for s in spans if s.name == "ctxmem.turn"]
    assert len(turns) == result.turns == 13 == run.attributes["ctxmem.turns"]
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.conversation.id"] == "conv-7"
    assert run.attributes["ctxmem.stop_reason"] == "end_turn"
    assert run.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert all(t.parent is not None and t.parent.span_id == run.context.span_id for t in turns)
    assert [t.attributes["ctxmem.turn.index"] for t in turns] == list(range(13))
    by_parent: dict[int, list[str]] = {}
    for s in spans:
        if s.parent is not None:
            by_parent.setdefault(s.parent.span_id, []).append(s.name)
    for t in turns:  # each turn: one build, then one model call, as its children
        assert by_parent[t.context.span_id] == ["ctxmem.build masking", "chat claude-sonnet-4-5"]
        a = t.attributes
        assert a["ctxmem.strategy"] == "masking" and a["gen_ai.conversation.id"] == "conv-7"
        assert 0 < a["ctxmem.tokens.after"] <= a["ctxmem.budget.available"]
        assert a["ctxmem.tokens.before"] > 0
        assert a["gen_ai.usage.input_tokens"] > 0 and "ctxmem.tokens.estimate" in a
        assert a["ctxmem.messages.kept"] > 0 or a["ctxmem.turn.index"] == 0  # turn 0: only the pinned task
    assert [t.attributes["ctxmem.tools.called"] for t in turns] == [1] * 12 + [0]
    # figures match what the session recorded: the model call's usage, per turn
    calls = [se.event for se in session.events() if se.event.kind == "model_call"]
    assert [t.attributes["gen_ai.usage.cache_read.input_tokens"] for t in turns] == [
        c.cache_read_tokens for c in calls]
    assert [t.attributes["ctxmem.tokens.estimate"] for t in turns] == [c.estimated_input_tokens for c in calls]
    assert any(t.attributes["ctxmem.cache.stable_prefix_tokens"] > 0 for t in turns)
    compacting = [t for t in turns if any(e.name == "ctxmem.compaction" for e in t.events)]
    assert compacting and all(
        t.attributes["ctxmem.messages.masked"] + t.attributes["ctxmem.messages.dropped"] > 0 for t in compacting)
    assert all(t in compacting for t in turns if t.attributes["ctxmem.messages.masked"] > 0)


def test_a_provider_refusal_is_an_event_on_its_turn_and_the_fallback_builds_it() -> None:
    provider, exp = _provider()
    # a window far smaller than the agent believes: the provider refuses, the fallback rebuilds
    with LoopbackServer(policy=Policy(), window=2500) as server:
        session = Session.create(MemoryStore(), session_id="conv-8")
        client = AnthropicClient("claude-sonnet-4-5", base_url=server.url, api_key="test")
        agent = Agent(client, session, tools=[Tool("read", read, "Read a chunk", {"type": "object"})],
                      preset="masking-200k", context_window=20000, max_tokens=256, max_turns=6, tracer=provider)
        result = agent.run_sync("Read every chunk.")
    assert result.compactions == 1
    turns = [s for s in exp.get_finished_spans() if s.name == "ctxmem.turn"]
    refused = [t for t in turns if any(e.name == "ctxmem.provider_refusal" for e in t.events)]
    assert len(refused) == 1
    ev = next(e for e in refused[0].events if e.name == "ctxmem.provider_refusal")
    assert ev.attributes["ctxmem.compaction.strategy"] == "window"
    assert ev.attributes["ctxmem.compaction.tokens_before"] > ev.attributes["ctxmem.compaction.tokens_after"]
    assert "too long" in ev.attributes["ctxmem.refusal"]
    assert refused[0].attributes["ctxmem.strategy"] == "window"  # the build that was sent
    dropped = refused[0].attributes["ctxmem.messages.dropped"]
    assert dropped > 0 and refused[0].attributes["ctxmem.events.dropped"] >= dropped  # >= 1 event a message
    later = turns[turns.index(refused[0]) + 1:]
    assert later and all(t.attributes["ctxmem.strategy"] == "window" for t in later)


def test_no_tracer_no_spans_and_a_bad_tracer_is_one_clear_error() -> None:
    from ctxmem.clients import ScriptedClient
    from ctxmem.errors import ConfigError

    otel.disable()
    provider, exp = _provider()
    session = Session.create(MemoryStore())
    Agent(ScriptedClient(["hi"]), session).run_sync("hello")
    assert exp.get_finished_spans() == ()
    with pytest.raises(ConfigError, match=r"field 'tracer'.*Tracer or TracerProvider"):
        Agent(ScriptedClient(["hi"]), session, tracer="yes please")
    Agent(ScriptedClient(["hi"]), session, tracer=provider.get_tracer("mine")).run_sync("again")
    assert [s.name for s in exp.get_finished_spans()][-1] == "invoke_agent ctxmem"
