"""ctxmem.Agent: the loop, its stops, compaction on "context too long", resume, and real SDKs."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from ctxmem.agent import Agent, Tool
from ctxmem.clients import ModelRequest, Response, ScriptedClient, Usage
from ctxmem.clients.anthropic import AnthropicClient
from ctxmem.clients.base import (
    CacheBreakpoints,
    MalformedResponseError,
    ProviderTimeoutError,
    RetryPolicy,
)
from ctxmem.clients.loopback import Fault, LoopbackServer
from ctxmem.clients.openai_compat import OpenAICompatClient
from ctxmem.config import load_preset
from ctxmem.context import BuildRequest, History
from ctxmem.context.builtins import Window
from ctxmem.errors import ConfigError, ContextLengthExceeded, UnknownNameError
from ctxmem.events import CompactionEvent, ModelCallEvent, NoteEvent, ToolResultEvent
from ctxmem.messages import (
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    tool_to_anthropic,
    validate_conversation,
)
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore
from ctxmem.tokens import Budget
from ctxmem.tokens.counting import count_request

FAST = RetryPolicy(max_retries=2, initial_delay=0.001, max_delay=0.01)
_IDS = itertools.count()
FILES = {"a.txt": "alpha " * 50, "b.txt": "beta " * 50, "c.txt": "gamma " * 50}


def read_file(args: dict[str, Any]) -> str:
    return FILES[args["path"]]  # KeyError for a missing file becomes an is_error result


READ = Tool(
    "read_file", read_file, "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}}
)


def reader_policy(req: ModelRequest) -> list[TextBlock | ToolUseBlock]:
    """Read every file not yet read *in the visible context* (one call per turn), then report.

    Tool ids come from a process-wide counter, so they stay unique even when a compacted
    context makes the policy read a file again.
    """
    n_results = sum(len(m.tool_results) for m in req.messages)
    seen = {u.input["path"] for m in req.messages for u in m.tool_uses}
    todo = [p for p in sorted(FILES) if p not in seen]
    if todo:
        n = next(_IDS)
        return [TextBlock(f"reading {todo[0]}"), ToolUseBlock(f"toolu_{n:04d}", "read_file", {"path": todo[0]})]
    return [TextBlock(f"done after {n_results} visible results")]


def model_calls(session: Session) -> list[ModelCallEvent]:
    return [e.event for e in session.events() if isinstance(e.event, ModelCallEvent)]


def test_scripted_tool_loop_records_everything() -> None:
    session = Session.create(MemoryStore())
    client = ScriptedClient(
        [
            [ToolUseBlock("t1", "read_file", {"path": "a.txt"}), ToolUseBlock("t2", "read_file", {"path": "nope"})],
            [ToolUseBlock("t3", "grep", {})],
            "finished",
        ]
    )
    result = Agent(client, session, tools=[READ], system="sys").run_sync("go")
    assert (result.stop_reason, result.turns, result.text) == ("end_turn", 3, "finished")
    msgs = session.messages()
    validate_conversation(msgs)
    results = {r.tool_use_id: r for m in msgs for r in m.tool_results}
    assert results["t1"].text == FILES["a.txt"] and not results["t1"].is_error
    assert results["t2"].is_error and "KeyError" in results["t2"].text
    assert results["t3"].is_error and "unknown tool 'grep'" in results["t3"].text
    calls = model_calls(session)
    assert len(calls) == 3 and all(c.input_tokens > 0 and c.estimated_input_tokens for c in calls)
    assert result.usage == sum((Usage(c.input_tokens, c.output_tokens) for c in calls), Usage())
    # requests carried the system prompt, the tool specs and a growing history
    assert [len(r.messages) for r in client.requests] == [1, 3, 5]
    assert client.requests[0].system == "sys" and client.requests[0].tools == (READ.spec,)
    tool_events = [e.event for e in session.events() if isinstance(e.event, ToolResultEvent)]
    assert [e.tool_name for e in tool_events] == ["read_file", "read_file", "grep"]


def test_async_tools_and_json_outputs() -> None:
    async def stats(args: dict[str, Any]) -> dict[str, int]:
        return {"n": len(args)}

    session = Session.create(MemoryStore())
    client = ScriptedClient([[ToolUseBlock("t1", "stats", {"x": 1, "y": 2})], "ok"])
    Agent(client, session, tools=[Tool("stats", stats)]).run_sync("go")
    assert session.messages()[2].tool_results[0].text == '{"n": 2}'


def test_stops_on_max_turns_tokens_and_cost() -> None:
    def loop_forever(req: ModelRequest) -> list[ToolUseBlock]:
        return [ToolUseBlock(f"t{len(req.messages)}", "read_file", {"path": "a.txt"})]

    def agent(**kw: Any) -> Agent:
        return Agent(ScriptedClient(policy=loop_forever), Session.create(MemoryStore()), tools=[READ], **kw)

    r = agent(max_turns=3).run_sync("go")
    assert (r.stop_reason, r.turns) == ("max_turns", 3)
    r = agent(max_total_tokens=1).run_sync("go")
    assert (r.stop_reason, r.turns) == ("token_budget", 1)
    r = agent(max_cost=0.0005, cost_fn=lambda u, model: u.total_tokens * 1e-6).run_sync("go")
    assert r.stop_reason == "cost_budget" and r.cost is not None and r.cost >= 0.0005
    # a budget stop never leaves a tool call without its result
    a = agent(max_total_tokens=1)
    a.run_sync("go")
    assert a.session.pending_tool_uses() == []
    with pytest.raises(ConfigError, match="cost_fn"):
        agent(max_cost=1.0)  # "scripted" has no price


def _dollars(usage: Usage, *, input: float, output: float, cache_write: float, cache_read: float) -> float:
    """The bill written out by hand from $/MTok figures (not through ctxmem's Rates)."""
    return (
        usage.input_tokens * input
        + usage.output_tokens * output
        + usage.cache_write_tokens * cache_write
        + usage.cache_read_tokens * cache_read
    ) / 1e6


# claude-sonnet-4-5 in src/ctxmem/tune/prices.toml: $3 in, $15 out, $3.75 write, $0.30 read;
# above 200K input tokens: $6, $22.50, $7.50, $0.60
SONNET = {"input": 3.0, "output": 15.0, "cache_write": 3.75, "cache_read": 0.30}
SONNET_LONG = {"input": 6.0, "output": 22.5, "cache_write": 7.5, "cache_read": 0.60}


def test_cost_is_priced_per_request_from_the_price_table() -> None:
    u1 = Usage(input_tokens=1_000, output_tokens=200, cache_write_tokens=5_000)
    u2 = Usage(input_tokens=300, output_tokens=100, cache_read_tokens=5_000)
    u3 = Usage(input_tokens=190_000, output_tokens=50, cache_read_tokens=20_000)  # 210K prompt: long tier
    replies = [
        Response(content=(ToolUseBlock("t1", "read_file", {"path": "a.txt"}),), stop_reason="tool_use", usage=u1),
        Response(content=(ToolUseBlock("t2", "read_file", {"path": "b.txt"}),), stop_reason="tool_use", usage=u2),
        Response(content=(TextBlock("done"),), stop_reason="end_turn", usage=u3),
    ]
    # an alias of claude-sonnet-4-5 (the dated model id) is priced too
    client = ScriptedClient(replies, model="claude-sonnet-4-5-20250929")
    agent = Agent(client, Session.create(MemoryStore()), tools=[READ])
    result = agent.run_sync("go")
    expected = _dollars(u1, **SONNET) + _dollars(u2, **SONNET) + _dollars(u3, **SONNET_LONG)
    assert result.cost == pytest.approx(expected, rel=1e-12)
    # per request, not on the summed usage (whose 216K prompt would bill all three at the long tier)
    assert result.cost != pytest.approx(_dollars(u1 + u2 + u3, **SONNET_LONG))
    assert agent.request_cost(u1) == pytest.approx(_dollars(u1, **SONNET))


def test_cost_uses_the_one_hour_write_price_when_the_agent_asks_for_it() -> None:
    u = Usage(input_tokens=10, output_tokens=10, cache_write_tokens=10_000)
    client = ScriptedClient([Response(content=(TextBlock("ok"),), stop_reason="end_turn", usage=u)], model="claude-sonnet-4-5")
    result = Agent(client, Session.create(MemoryStore()), cache_breakpoints=CacheBreakpoints(ttl="1h")).run_sync("go")
    assert result.cost == pytest.approx(_dollars(u, **{**SONNET, "cache_write": 6.0}))


def test_cost_is_none_only_for_an_unknown_model_and_a_user_price_file_fixes_that(tmp_path: Path) -> None:
    def run(**kw: Any) -> Any:
        client = ScriptedClient(["hello"], model="my-local-qwen")
        return Agent(client, Session.create(MemoryStore()), **kw).run_sync("go")

    assert run().cost is None
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[models."my-local-qwen"]\nprovider = "self"\ninput = 0.5\noutput = 2.0\n'
        'source = "our GPU bill"\nas_of = 2026-01-01\n'
    )
    r = run(prices=prices)
    # no cache prices: reads and writes would bill at the input price; the double reports none
    assert r.cost == pytest.approx(_dollars(r.usage, input=0.5, output=2.0, cache_write=0.5, cache_read=0.5))
    assert r.cost > 0
    # max_cost now works without cost_fn, and stops before the second request
    looping = ScriptedClient(
        policy=lambda req: [ToolUseBlock(f"t{len(req.messages)}", "read_file", {"path": "a.txt"})],
        model="my-local-qwen",
    )
    r = Agent(looping, Session.create(MemoryStore()), tools=[READ], prices=prices, max_cost=1e-9).run_sync("go")
    assert (r.stop_reason, r.turns) == ("cost_budget", 1) and r.cost is not None and r.cost >= 1e-9


def test_the_users_price_file_is_read_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prices = tmp_path / "prices.toml"
    monkeypatch.setenv("CTXMEM_PRICES", str(prices))

    def cost() -> float | None:
        client = ScriptedClient(["hello"], model="house-model")
        return Agent(client, Session.create(MemoryStore())).run_sync("go").cost

    assert cost() is None  # no file yet
    entry = '[models."house-model"]\nprovider = "self"\ninput = {}\noutput = 1.0\nsource = "x"\nas_of = 2026-01-01\n'
    prices.write_text(entry.format(1.0))
    first = cost()
    assert first is not None and first > 0
    prices.write_text(entry.format(3.0))  # an edited file is read again
    os.utime(prices, (1e9, 1e9))
    second = cost()
    assert second is not None and second > first


def test_cost_through_the_real_sdks_matches_the_billed_usage() -> None:
    with LoopbackServer(reader_policy) as server:
        session = Session.create(MemoryStore())
        client = AnthropicClient("claude-sonnet-4-5", base_url=server.url, retry=FAST)
        result = Agent(client, session, tools=[READ], system="You read files.").run_sync("Read all files.")
        billed = [r.usage for r in server.requests if r.usage]
        assert len(billed) == 4 and any(u.cache_read_tokens for u in billed)
        assert result.cost == pytest.approx(sum(_dollars(u, **SONNET) for u in billed), rel=1e-12)
    with LoopbackServer(reader_policy) as server:
        client2 = OpenAICompatClient("gpt-4o-mini", base_url=server.openai_base_url, retry=FAST)
        result = Agent(client2, Session.create(MemoryStore()), tools=[READ]).run_sync("Read all files.")
        billed = [r.usage for r in server.requests if r.usage]
        # gpt-4o-mini: $0.15 in, $0.60 out, cached input $0.075, writes at the input price
        mini = {"input": 0.15, "output": 0.60, "cache_write": 0.15, "cache_read": 0.075}
        assert result.cost == pytest.approx(sum(_dollars(u, **mini) for u in billed), rel=1e-12)


def test_context_too_long_compacts_once_and_retries() -> None:
    session = Session.create(MemoryStore())
    client = ScriptedClient(policy=reader_policy)
    agent = Agent(client, session, tools=[READ], max_tokens=64)
    agent.run_sync("read the files")
    turns_before = len(client.requests)
    client.enqueue(ContextLengthExceeded("prompt is too long: 999 tokens > 500 maximum", status=400), "summary ok")
    result = agent.run_sync("now summarize")
    assert result.stop_reason == "end_turn" and result.compactions == 1 and result.text == "summary ok"
    [compaction] = [e.event for e in session.events() if isinstance(e.event, CompactionEvent)]
    assert compaction.strategy == "window"
    assert compaction.tokens_after < compaction.tokens_before and compaction.source_event_ids
    assert "context too long" in (compaction.reason or "")
    failed, retried = client.requests[turns_before:]
    assert len(retried.messages) < len(failed.messages)
    assert retried.messages[0] == Message.user("read the files")  # the task stays pinned
    validate_conversation(retried.messages)
    # the log is untouched: the full history is still there
    assert len(session.messages()) == len(failed.messages) + 1


def test_second_refusal_is_raised_and_the_session_is_intact() -> None:
    session = Session.create(MemoryStore())
    too_long = ContextLengthExceeded("prompt is too long", status=400)
    client = ScriptedClient(policy=reader_policy)
    agent = Agent(client, session, tools=[READ])
    agent.run_sync("read")
    before = session.messages()
    client.enqueue(too_long, too_long)
    with pytest.raises(ContextLengthExceeded):
        agent.run_sync("again")
    assert session.messages() == [*before, Message.user("again")]
    assert sum(isinstance(e.event, CompactionEvent) for e in session.events()) == 1


def test_default_fallback_cuts_only_at_safe_points() -> None:
    msgs = [
        Message.user("task"),
        Message.assistant(ToolUseBlock("t1", "read_file", {})),
        Message("user", (ToolResultBlock("t1", "x " * 4000),)),
        Message.assistant("short"),
        Message.user("last"),
    ]
    history = History.from_messages(msgs, "heuristic")
    out = Window().build(BuildRequest(history, Budget(200, reserve_output=10))).messages
    assert list(out) == [msgs[0], msgs[3], msgs[4]]
    assert list(Window().build(BuildRequest(history, Budget(100_000))).messages) == msgs


CRASH_SCRIPT = """
import os, sys
from ctxmem.agent import Agent, Tool
from ctxmem.clients import ScriptedClient
from ctxmem.messages import ToolUseBlock
from ctxmem.session import Session
from ctxmem.store import SQLiteStore

store = SQLiteStore(sys.argv[1])
session = Session.create(store, session_id="crash")
def boom(args):
    os._exit(17)  # the process dies mid-tool-call: no result is ever written
client = ScriptedClient([[ToolUseBlock("t1", "bench", {"n": 1})]])
Agent(client, session, tools=[Tool("bench", boom)]).run_sync("benchmark it")
"""


@pytest.mark.parametrize("on_resume", ["rerun", "fail"])
def test_resume_after_a_crash_mid_tool_call(tmp_path: Path, on_resume: str) -> None:
    db = tmp_path / "s.db"
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH_SCRIPT), str(db)], capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr
    store = SQLiteStore(str(db))
    session = Session.open(store, "crash")
    assert [u.id for u in session.pending_tool_uses()] == ["t1"]
    ran: list[dict[str, Any]] = []

    def bench(args: dict[str, Any]) -> str:
        ran.append(args)
        return "bench#1: 1.23 ms"

    client = ScriptedClient(["resumed fine"])
    result = Agent(client, session, tools=[Tool("bench", bench)], on_resume=on_resume).run_sync()
    assert result.text == "resumed fine"
    assert session.pending_tool_uses() == []
    [res] = session.messages()[2].tool_results
    if on_resume == "rerun":
        assert ran == [{"n": 1}] and res.text == "bench#1: 1.23 ms" and not res.is_error
    else:
        assert ran == [] and res.is_error and "interrupted" in res.text
    notes = [e.event for e in session.events() if isinstance(e.event, NoteEvent)]
    assert notes and "resumed: 1 unfinished" in notes[0].text
    validate_conversation(client.requests[0].messages)
    store.close()


def test_strategy_by_preset_name_or_from_the_session_metadata() -> None:
    from ctxmem.context.masking import Masking

    store = MemoryStore()
    client = ScriptedClient(["ok"])
    by_name = Agent(client, Session.create(store), strategy="masking-200k")
    assert isinstance(by_name.strategy, Masking) and by_name.context_window == 200_000
    # the strategy names the recall tool in its output; the agent offers it with the request
    by_name.run_sync("hi")
    assert [t.name for t in client.requests[0].tools] == ["recall"]
    # a session created with a preset resumes under it, with no strategy= passed
    session = Session.create(store, metadata={"strategy": "window-32k"})
    again = Agent(ScriptedClient(["ok"]), Session.open(store, session.id))
    assert isinstance(again.strategy, Window)
    assert again.strategy.config == load_preset("window-32k").strategy().config
    # an explicit strategy wins over the session's
    assert isinstance(Agent(ScriptedClient(["ok"]), session, strategy="masking-200k").strategy, Masking)
    # nothing anywhere: the truncating full history
    plain = Agent(ScriptedClient(["ok"]), Session.create(store))
    assert type(plain.strategy).__name__ == "Dump"
    with pytest.raises(UnknownNameError, match=r"Did you mean 'masking-200k'"):
        Agent(ScriptedClient(["ok"]), Session.create(store), strategy="maskin-200k")
    with pytest.raises(ConfigError, match=r"metadata\['strategy'\]"):
        Agent(ScriptedClient(["ok"]), Session.create(store, metadata={"strategy": 3}))


def test_calibration_observations_are_stored_and_reloaded() -> None:
    store = MemoryStore()
    session = Session.create(store)
    client = ScriptedClient(policy=reader_policy)
    agent = Agent(client, session, tools=[READ])
    agent.run_sync("go")
    n = agent.calibration.observations
    assert n == len(client.requests) > 0
    again = Agent(client, Session.create(store), tools=[READ])
    assert again.calibration.observations == n
    assert again.calibration.factor == pytest.approx(agent.calibration.factor)


def test_calibration_shrinks_the_budget_so_requests_fit_the_providers_count(o200k: Any) -> None:
    """A provider that counts 1.6x what o200k counts, with a hard window in its own units.

    Uncalibrated, the agent would fill its window by our count and send requests the
    provider counts ~1.6x over (each rejected, then compacted). Calibrated from the usage it
    receives, it shrinks the strategy's budget by the learned factor: no request is ever
    refused, yet the window is used and history really is cut.
    """
    window, ratio = 6_000, 1.6
    chunk = " ".join(f"w{i}" for i in range(300))
    ids = itertools.count()

    def provider(req: ModelRequest) -> Response:
        tools = [tool_to_anthropic(t) for t in req.tools]
        counted = math.ceil(ratio * count_request(req.messages, o200k, system=req.system, tools=tools).total)
        if counted + req.max_tokens > window:
            raise ContextLengthExceeded(f"prompt is too long: {counted} tokens > {window}", provider="test")
        n = next(ids)
        return Response(
            content=(ToolUseBlock(f"t{n}", "dump", {}),), stop_reason="tool_use", usage=Usage(counted, 5)
        )

    def dump(args: dict[str, Any]) -> str:
        return chunk

    session = Session.create(MemoryStore())
    client = ScriptedClient(policy=provider)
    agent = Agent(client, session, tools=[Tool("dump", dump)], context_window=window, max_tokens=200,
                  max_turns=40, tokenizer="o200k_base", strategy=Window())
    result = agent.run_sync("go")
    assert (result.stop_reason, result.turns) == ("max_turns", 40)
    # the learned factor is the provider's count over ours (well above 1 here)
    factor = agent.calibration.factor
    assert factor == pytest.approx(ratio, rel=0.01) and agent.calibration.observations == 40
    # only the input part is divided by the factor; the reply's reserve stays whole
    assert agent._budget().available == int((window - 200) / factor)
    assert agent._budget().reserve_output == 200
    calls = model_calls(session)
    reported = [c.input_tokens for c in calls]
    assert len(reported) == 40 and max(reported) + 200 <= window  # nothing was ever refused
    compactions = [e.event for e in session.events() if isinstance(e.event, CompactionEvent)]
    assert compactions and not [c for c in compactions if "provider" in (c.reason or "")]  # cuts, no refusals
    assert all(c.strategy == "window" and c.tokens_after < c.tokens_before for c in compactions)
    assert max(reported) > 0.75 * window  # the window is used, not over-trimmed
    # history outgrew the window and was cut: the last request carried far less than all of it
    assert len(client.requests[-1].messages) < len(session.messages()) / 2


# ---------------------------------------------------------------- real SDKs, loopback server


def _assert_cache_usage_in_store(session: Session) -> None:
    calls = model_calls(session)
    assert calls[0].cache_write_tokens > 0
    assert all(c.cache_read_tokens > 0 for c in calls[1:])
    assert all(c.request_id for c in calls)


def test_anthropic_sdk_through_agent() -> None:
    with LoopbackServer(reader_policy) as server:
        session = Session.create(MemoryStore())
        client = AnthropicClient("claude-test", base_url=server.url, retry=FAST)
        result = Agent(client, session, tools=[READ], system="You read files.").run_sync("Read all files.")
        assert result.stop_reason == "end_turn" and result.text == "done after 3 visible results"
        assert len(server.requests) == 4 and not server.rejected
        assert all(r.status == 200 for r in server.requests)
        # what the store holds is what the server billed
        assert [c.cache_read_tokens for c in model_calls(session)] == [r.usage.cache_read_tokens for r in server.requests if r.usage]
        _assert_cache_usage_in_store(session)
        validate_conversation(session.messages())


def test_openai_sdk_through_agent() -> None:
    with LoopbackServer(reader_policy) as server:
        session = Session.create(MemoryStore())
        client = OpenAICompatClient("qwen3", base_url=server.openai_base_url, retry=FAST)
        result = Agent(client, session, tools=[READ], system="You read files.").run_sync("Read all files.")
        assert result.text == "done after 3 visible results"
        assert len(server.requests) == 4 and not server.rejected
        calls = model_calls(session)
        assert all(c.cache_read_tokens > 0 for c in calls[1:])  # automatic prefix caching


def test_real_overflow_compacts_and_retries_through_the_sdk() -> None:
    todo = sorted(FILES)

    def read_each_once(req: ModelRequest) -> list[TextBlock | ToolUseBlock]:
        # remembers what it read itself, so a compacted context does not make it re-read
        if todo:
            return [ToolUseBlock(f"toolu_{next(_IDS):04d}", "read_file", {"path": todo.pop(0)})]
        return [TextBlock("all read")]

    with LoopbackServer(read_each_once, window=500) as server:
        session = Session.create(MemoryStore())
        client = AnthropicClient("claude-test", base_url=server.url, retry=FAST)
        result = Agent(client, session, tools=[READ], max_tokens=64).run_sync("Read all files.")
        assert result.stop_reason == "end_turn" and result.compactions == 1
        too_long = [r for r in server.requests if r.status == 400]
        assert len(too_long) == 1 and "prompt is too long" in (too_long[0].error or "")
        assert server.requests[-1].status == 200
        assert sum(isinstance(e.event, CompactionEvent) for e in session.events()) == 1


@pytest.mark.parametrize(
    ("fault", "error"), [(Fault.malformed_json(), MalformedResponseError), (Fault.hang(5), ProviderTimeoutError)]
)
def test_bad_replies_leave_the_session_intact(fault: Fault, error: type[Exception]) -> None:
    with LoopbackServer(reader_policy) as server:
        session = Session.create(SQLiteStore(":memory:"))
        client = AnthropicClient("claude-test", base_url=server.url, retry=RetryPolicy(max_retries=0), timeout=0.3)
        agent = Agent(client, session, tools=[READ])
        server.fail_next(Fault.server_error())  # one retryable failure first: still fine
        client.retry = FAST
        agent.max_turns = 1
        agent.run_sync("Read all files.")
        before = session.messages()
        client.retry = RetryPolicy(max_retries=0)
        server.fail_next(fault)
        agent.max_turns = 5
        with pytest.raises(error):
            agent.run_sync()
        assert session.messages() == before
        server.fail_next()
        agent.run_sync()  # and the run continues from where it stopped
        assert session.messages()[-1].text == "done after 3 visible results"


# ---------------------------------------------------------------- examples


def _load_example(name: str) -> Any:
    import importlib.util

    root = Path(__file__).resolve().parents[1] / "examples"
    sys.path.insert(0, str(root))
    try:
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(root))


def calculator_policy(req: ModelRequest) -> list[TextBlock | ToolUseBlock]:
    results = [r for m in req.messages for r in m.tool_results]
    if not results:
        return [ToolUseBlock("toolu_calc", "calculate", {"expression": "(12 * 34 + 5) / 7"})]
    return [TextBlock(f"The answer is {results[-1].text}.")]


@pytest.mark.parametrize("example", ["anthropic_agent", "openai_compatible_agent"])
def test_examples_run_against_the_loopback_server(example: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    module = _load_example(example)
    with LoopbackServer(calculator_policy) as server:
        url = server.url if example == "anthropic_agent" else server.openai_base_url
        result = module.main(["What is (12*34+5)/7?", "--base-url", url, "--db", str(tmp_path / "a.db")])
        assert not server.rejected and len(server.requests) == 2
    assert result.text == "The answer is 59.0."
    assert "The answer is 59.0." in capsys.readouterr().out
    store = SQLiteStore(str(tmp_path / "a.db"))
    [info] = store.list_sessions()
    assert len(Session.open(store, info.id).messages()) == 4
    store.close()


# ---------------------------------------------------------------- counting and calibration


def test_fallback_budget_after_a_refusal_never_underflows() -> None:
    """max_tokens=4096 with a calibration factor above 1 used to leave a 1-token fallback budget."""
    store = MemoryStore()
    for _ in range(5):  # the provider has counted 1.5x what we count, persisted for this model
        store.record_calibration("scripted", "o200k_base", 1000, 1500)
    session = Session.create(store)
    client = ScriptedClient(policy=reader_policy)
    agent = Agent(client, session, tools=[READ], max_tokens=4096, context_window=200_000, tokenizer="o200k_base")
    assert agent.calibration.factor == pytest.approx(1.5)
    agent.run_sync("read the files")
    client.enqueue(ContextLengthExceeded("prompt is too long", status=400), "summary ok")
    result = agent.run_sync("now summarize")
    assert result.stop_reason == "end_turn" and result.compactions == 1
    sent = client.requests[-2]
    estimate = [e.event for e in session.events() if isinstance(e.event, CompactionEvent)][-1].tokens_before
    fallback = agent._budget()
    # the input part shrank to shrink x what was sent; the reply's reserve is whole
    assert fallback.reserve_output == 4096 and fallback.available == int(estimate * agent.shrink)
    assert len(client.requests[-1].messages) <= len(sent.messages)


def test_calibration_learns_both_ways_within_its_band() -> None:
    from ctxmem.tokens import Calibration

    exact = Calibration.for_tokenizer("m", "tiktoken:o200k_base", exact=True)
    exact.observe(1000, 600)
    assert exact.factor == 1.0  # one reply is not enough to send more than we count
    exact.observe(1000, 600)
    exact.observe(1000, 600)
    assert exact.ratio == pytest.approx(0.6) and exact.factor == pytest.approx(0.8)  # the band's floor
    estimate = Calibration.for_tokenizer("m", "heuristic:v2", exact=False)
    for _ in range(3):
        estimate.observe(1840, 1000)  # the heuristic over-counts kernel content ~1.84x
    assert estimate.factor == pytest.approx(1000 / 1840)
    up = Calibration.for_tokenizer("m", "tiktoken:o200k_base", exact=True)
    up.observe(1000, 1300)
    assert up.factor == pytest.approx(1.3)  # upward at once: it is the safe side
    up.observe(1000, 9000)
    assert up.factor == 2.0  # but never past the band


def test_an_over_counting_tokenizer_is_calibrated_down_so_the_window_is_used() -> None:
    """The heuristic with a provider that counts ~0.55x of it: after calibration the input
    budget handed to the strategy is larger than the window's input part."""
    store = MemoryStore()
    for _ in range(3):
        store.record_calibration("scripted", "heuristic", 1840, 1000)
    agent = Agent(ScriptedClient(["ok"]), Session.create(store), tokenizer="heuristic", context_window=60_000,
                  max_tokens=1000)
    assert agent._budget().available > 59_000 * 1.5


def test_the_agent_counts_exactly_by_default_and_warns_once_when_it_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    import warnings

    from ctxmem import agent as agent_mod
    from ctxmem.errors import TokenizerError

    assert agent_mod.choose_tokenizer("gpt-4o") == ("o200k_base", True)
    assert agent_mod.choose_tokenizer("claude-sonnet-4-6")[0] == "o200k_base"  # a stand-in, calibrated
    assert Agent(ScriptedClient(["ok"]), Session.create(MemoryStore())).tokenizer_name == "o200k_base"
    assert Agent(ScriptedClient(["ok"]), Session.create(MemoryStore()), tokenizer="cl100k_base").tokenizer_name == "cl100k_base"
    real = agent_mod.get_tokenizer

    def offline(name: str) -> Any:
        if name != "heuristic":
            raise TokenizerError(f"cannot load tiktoken encoding {name!r}. Offline")
        return real(name)

    monkeypatch.setattr(agent_mod, "get_tokenizer", offline)
    monkeypatch.setattr(agent_mod, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="HEURISTIC"):
        assert agent_mod.choose_tokenizer("some-model") == ("heuristic", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agent_mod.choose_tokenizer("some-model") == ("heuristic", False)  # said once


def test_each_appended_block_is_encoded_once(o200k: Any) -> None:
    """Thirty turns: a tool output is tokenized once, when it is appended — never recounted."""
    seen: list[str] = []

    class Spy:
        id, name, exact = o200k.id, o200k.name, True

        def count(self, text: str) -> int:
            seen.append(text)
            return int(o200k.count(text))

        def count_many(self, texts: Any) -> list[int]:
            seen.extend(texts)
            return list(o200k.count_many(texts))

    outputs = [f"result {i}: " + " ".join(f"v{i}_{k}" for k in range(200)) for i in range(30)]
    ids = itertools.count()

    def policy(req: ModelRequest) -> Any:
        n = next(ids)
        return [ToolUseBlock(f"t{n}", "emit", {"i": n})] if n < 30 else "done"

    session = Session.create(MemoryStore())
    agent = Agent(ScriptedClient(policy=policy), session, tools=[Tool("emit", lambda a: outputs[a["i"]])],
                  strategy="window-200k", max_turns=40)
    history = agent._sync_history()
    spy = Spy()
    agent.tokenizer = spy  # type: ignore[assignment]  # whatever the agent counts with is watched
    try:
        history.tokenizer = spy  # type: ignore[misc]
    except AttributeError:
        history._tok = spy  # type: ignore[assignment,attr-defined]
    result = agent.run_sync("go")
    assert result.turns == 31
    assert all(seen.count(out) == 1 for out in outputs), [seen.count(o) for o in outputs]


# --------------------------------------------------------------------------- replies the session could not store


def _reply(*blocks: Any, stop: str = "end_turn") -> Response:
    return Response(content=blocks, stop_reason=stop, usage=Usage(input_tokens=10, output_tokens=5), model="local")  # type: ignore[arg-type]


def test_a_server_that_numbers_calls_call_0_every_turn_gets_fresh_ids() -> None:
    """Some OpenAI-compatible servers reuse ``call_0``: the second reply was refused by the
    session, the run aborted, and the paid reply was recorded nowhere."""
    seen: list[dict[str, Any]] = []
    echo = Tool("echo", lambda args: seen.append(args) or "ok", "echo")
    s = Session.create(MemoryStore())
    client = ScriptedClient([
        _reply(ToolUseBlock("call_0", "echo", {"n": 1}), stop="tool_use"),
        _reply(ToolUseBlock("call_0", "echo", {"n": 2}), ToolUseBlock("call_0", "echo", {"n": 3}), stop="tool_use"),
        _reply(TextBlock("done")),
    ])
    result = Agent(client, s, tools=[echo], preset="window-32k").run_sync("go")
    assert result.stop_reason == "end_turn" and seen == [{"n": 1}, {"n": 2}, {"n": 3}]
    ids = [b.id for m in s.messages() for b in m.content if isinstance(b, ToolUseBlock)]
    assert ids == ["call_0", "call_0_2", "call_0_3"]
    validate_conversation(s.messages())
    # the requests carried the recorded ids, answered in order
    last = client.requests[-1].messages
    assert [b.tool_use_id for m in last for b in m.content if isinstance(b, ToolResultBlock)] == ids


def test_a_reply_or_tool_output_with_lone_surrogates_is_stored_with_replacement_characters() -> None:
    def listing(args: dict[str, Any]) -> str:
        return "report-\udcff.txt"  # os.listdir of a name that is not UTF-8

    s = Session.create(MemoryStore())
    client = ScriptedClient([
        _reply(TextBlock("half an emoji \ud83d here"), ToolUseBlock("c1", "ls", {"dir\udc80": ["x\ud800"]}), stop="tool_use"),
        _reply(TextBlock("done")),
    ])
    Agent(client, s, tools=[Tool("ls", listing, "list")], preset="window-32k").run_sync("go")
    msgs = s.messages()
    assert msgs[1].content[0] == TextBlock("half an emoji \ufffd here")
    assert msgs[1].content[1] == ToolUseBlock("c1", "ls", {"dir\ufffd": ["x\ufffd"]})
    assert msgs[2].content[0] == ToolResultBlock("c1", "report-\ufffd.txt")
    assert s.pending_tool_uses() == []


def test_an_empty_reply_keeps_its_usage_but_is_not_sent_back_as_an_empty_message() -> None:
    s = Session.create(MemoryStore())
    client = ScriptedClient([_reply(), _reply(TextBlock("second"))])
    agent = Agent(client, s, preset="window-32k")
    agent.run_sync("first")
    agent.run_sync("again")
    assert all(m.content for m in client.requests[-1].messages)
    calls = [e.event for e in s.events() if isinstance(e.event, ModelCallEvent)]
    assert len(calls) == 2 and calls[0].output_tokens == 5
    assert any(isinstance(e.event, NoteEvent) and "empty" in e.event.text for e in s.events())


def test_a_reply_the_session_refuses_still_records_its_usage_and_names_the_model() -> None:
    from ctxmem.errors import InvalidConversationError

    s = Session.create(MemoryStore())
    client = ScriptedClient([_reply(ToolUseBlock("c1", "echo", {"x": math.nan}), stop="tool_use")])
    with pytest.raises(InvalidConversationError, match="the reply of 'local' could not be recorded") as exc:
        Agent(client, s, tools=[Tool("echo", lambda a: "ok", "echo")], preset="window-32k").run_sync("go")
    assert "NaN" in str(exc.value)
    kinds = [type(e.event).__name__ for e in s.events()]
    assert kinds == ["MessageEvent", "ModelCallEvent", "NoteEvent"]  # the prompt, the paid call, why
    assert s.pending_tool_uses() == []
