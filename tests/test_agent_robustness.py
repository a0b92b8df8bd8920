"""The agent under interruption, odd tools, a session changed behind its back, and replies
that OpenAI-compatible servers really send (truncated arguments, empty or missing content)."""

from __future__ import annotations

import _thread
import asyncio
import sys
import threading
import time
from typing import Any

import pytest

from ctxmem.agent import Agent, Tool
from ctxmem.clients import ModelRequest, Response, ScriptedClient, Usage, base
from ctxmem.clients.anthropic import AnthropicClient
from ctxmem.clients.base import RetryPolicy, run_sync
from ctxmem.clients.loopback import LoopbackServer
from ctxmem.clients.openai_compat import OpenAICompatClient
from ctxmem.events import ModelCallEvent
from ctxmem.messages import Message, TextBlock, ThinkingBlock, ToolUseBlock, validate_conversation
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore


def _in_thread(fn: Any, timeout: float = 20.0) -> dict[str, Any]:
    """``fn()`` in a daemon thread: a deadlock fails the test instead of hanging the suite."""
    out: dict[str, Any] = {}

    def go() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    out["hung"] = t.is_alive()
    return out


# ------------------------------------------------------------------ interruption, odd tools


def test_ctrl_c_during_run_sync_stops_the_run_and_the_session_resumes() -> None:
    """Ctrl-C reached the caller, but the run went on in the background loop's thread:
    every request and tool call still happened."""
    ran: list[int] = []

    def slow(args: dict[str, Any]) -> str:
        ran.append(args["i"])
        time.sleep(0.4)
        return "ok"

    def policy(req: ModelRequest) -> Any:
        if req.messages[-1].text == "go on":
            return "finished"
        return [ToolUseBlock(f"t{len(req.messages)}", "slow", {"i": len(req.messages)})]

    client = ScriptedClient(policy=policy)
    session = Session.create(SQLiteStore(":memory:"))
    agent = Agent(client, session, tools=[Tool("slow", slow)], max_turns=8)
    timer = threading.Timer(0.6, _thread.interrupt_main)  # what Ctrl-C does to the main thread
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            agent.run_sync("go")
    finally:
        timer.cancel()
    requests, tools = len(client.requests), len(ran)
    time.sleep(1.2)  # long enough for two more turns, had the run gone on
    assert (len(client.requests), len(ran)) == (requests, tools) and requests < 8
    # the interrupted call is settled on the next run, and the conversation stays valid
    result = agent.run_sync("go on")
    assert result.stop_reason == "end_turn" and result.text == "finished"
    validate_conversation(session.messages())
    assert session.pending_tool_uses() == []


def test_a_tool_that_calls_sys_exit_gives_an_error_result_and_the_loop_survives() -> None:
    """argparse inside a tool raised SystemExit: it killed the shared loop's thread, the run
    hung forever, and so did every later sync call."""

    def cli(args: dict[str, Any]) -> str:
        sys.exit(2)

    client = ScriptedClient([[ToolUseBlock("t1", "cli", {})], "done"])
    session = Session.create(MemoryStore())
    out = _in_thread(lambda: Agent(client, session, tools=[Tool("cli", cli)]).run_sync("go"))
    assert not out["hung"] and "error" not in out, out
    result = session.messages()[2].tool_results[0]
    assert result.is_error and "SystemExit" in result.text
    assert out["value"].stop_reason == "end_turn"

    async def one() -> int:
        return 1

    assert _in_thread(lambda: run_sync(one))["value"] == 1


def test_a_tool_raising_keyboard_interrupt_reaches_the_caller_and_the_loop_survives() -> None:
    def interrupted(args: dict[str, Any]) -> str:
        raise KeyboardInterrupt

    client = ScriptedClient([[ToolUseBlock("t1", "k", {})], "done"])
    session = Session.create(MemoryStore())
    out = _in_thread(lambda: Agent(client, session, tools=[Tool("k", interrupted)]).run_sync("go"))
    assert not out["hung"] and isinstance(out.get("error"), KeyboardInterrupt), out

    async def one() -> int:
        return 1

    assert _in_thread(lambda: run_sync(one))["value"] == 1
    # the call left without a result is settled by the next run
    agent = Agent(ScriptedClient(["ok"]), session, tools=[Tool("k", interrupted)], on_resume="fail")
    assert agent.run_sync().stop_reason == "end_turn"
    validate_conversation(session.messages())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_background_loop_whose_thread_died_is_replaced() -> None:
    loop = base._background_loop()

    def die() -> None:
        raise SystemExit  # escapes run_forever: the thread ends, the loop is not closed

    threads = [t for t in threading.enumerate() if t.name == "ctxmem-sync-loop"]
    loop.call_soon_threadsafe(die)
    for t in threads:
        t.join(5)
    assert not loop.is_closed()

    async def one() -> int:
        return 1

    out = _in_thread(lambda: run_sync(one))
    assert not out["hung"] and out.get("value") == 1, out
    assert base._background_loop() is not loop
    loop.close()


def test_a_sync_tool_may_run_a_sub_agent_with_run_sync() -> None:
    """Sync tools ran on the loop's own thread: a tool calling run_sync deadlocked."""
    sub_client = ScriptedClient(policy=lambda req: "sub answer")

    def ask(args: dict[str, Any]) -> str:
        return Agent(sub_client, Session.create(MemoryStore())).run_sync(args["q"]).text

    order: list[str] = []

    async def later(args: dict[str, Any]) -> str:
        await asyncio.sleep(0)
        order.append("async")
        return "async done"

    main = Agent(
        ScriptedClient([[ToolUseBlock("t1", "ask", {"q": "hi"}), ToolUseBlock("t2", "later", {})], "done"]),
        Session.create(MemoryStore()),
        tools=[Tool("ask", ask), Tool("later", later)],
    )
    out = _in_thread(lambda: main.run_sync("go"), timeout=15)
    assert not out["hung"], "deadlock: the sync tool waited on the loop it was blocking"
    assert out["value"].stop_reason == "end_turn"
    results = main.session.messages()[2].tool_results
    assert [(r.tool_use_id, r.text) for r in results] == [("t1", "sub answer"), ("t2", "async done")]


# ------------------------------------------------------------------ the session changed between runs


class _NoCatchUp(MemoryStore):
    """A store without ``chain_since``: the agent walks the new events itself."""

    chain_since = None  # type: ignore[assignment]


@pytest.mark.parametrize("make_store", [lambda: SQLiteStore(":memory:"), MemoryStore, _NoCatchUp])
def test_a_reused_agent_sends_what_the_session_holds_after_a_record_or_a_rewind(make_store: Any) -> None:
    s = Session.create(make_store())
    client = ScriptedClient(policy=lambda req: f"seen {len(req.messages)}")
    agent = Agent(client, s)
    agent.run_sync("first")
    s.record(Message.user("recorded by the app between runs"))
    agent.run_sync("second")
    assert client.requests[-1].messages == tuple(s.messages()[:-1])
    mark = s.messages_with_ids()[1][1][-1]  # the first reply's last event
    s.rewind(mark)
    agent.run_sync("after the rewind")
    assert [m.text for m in client.requests[-1].messages] == ["first", "seen 1", "after the rewind"]
    assert client.requests[-1].messages == tuple(s.messages()[:-1])


def test_an_unchanged_session_keeps_the_agents_history_object() -> None:
    """The fast path: the agent's own writes (and events without a role) extend the cached
    History; it is not reloaded every turn."""
    s = Session.create(SQLiteStore(":memory:"))
    agent = Agent(ScriptedClient(policy=lambda req: "ok"), s)
    agent.run_sync("one")
    history = agent._sync_history()
    s.note("a note changes no message")
    agent.run_sync("two")
    assert agent._sync_history() is history and len(history) == 4


# ------------------------------------------------------------------ what OpenAI-compatible servers send


class _TruncatedArguments(LoopbackServer):
    def _render(self, protocol: Any, n: int, model: str, blocks: Any, stop: str, usage: Any) -> Any:
        out = super()._render(protocol, n, model, blocks, stop, usage)
        for c in out["choices"][0]["message"].get("tool_calls") or ():
            c["function"]["arguments"] = '{"path": "a.txt"'  # cut short, as local models do
        return out


def test_truncated_tool_arguments_are_recorded_paid_for_and_answered_with_an_error() -> None:
    """The reply raised MalformedResponseError: no retry, usage lost, the model never told."""
    called: list[Any] = []
    with _TruncatedArguments([[ToolUseBlock("call_0", "rd", {"path": "a.txt"})], "done"]) as server:
        s = Session.create(SQLiteStore(":memory:"))
        client = OpenAICompatClient("gpt-4o", base_url=server.openai_base_url, retry=RetryPolicy(max_retries=0))

        def rd(args: dict[str, Any]) -> str:
            called.append(args)
            return "x"

        result = Agent(client, s, tools=[Tool("rd", rd)]).run_sync("go")
        second = server.requests[-1].body["messages"]
    assert result.stop_reason == "end_turn" and called == []
    assert sum(isinstance(e.event, ModelCallEvent) for e in s.events()) == 2
    msgs = s.messages()
    assert msgs[1].tool_uses[0].input == {"_unparsed_arguments": '{"path": "a.txt"'}
    answer = msgs[2].tool_results[0]
    assert answer.is_error and "not valid JSON" in answer.text
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]
    assert "not valid JSON" in second[2]["content"]


class _ThinkingOnly(LoopbackServer):
    def _render(self, protocol: Any, n: int, model: str, blocks: Any, stop: str, usage: Any) -> Any:
        out = super()._render(protocol, n, model, blocks, stop, usage)
        out["choices"][0]["message"].pop("reasoning_signature", None)
        return out


def test_a_reply_that_was_all_thinking_is_sent_back_with_empty_content_not_null() -> None:
    """The next request held {"role": "assistant", "content": null} without tool_calls."""
    replies: list[Any] = [Response((ThinkingBlock("let me think " * 20, "x"),), "max_tokens", Usage(20, 100)), "answer"]
    with _ThinkingOnly(replies) as server:
        s = Session.create(SQLiteStore(":memory:"))
        agent = Agent(OpenAICompatClient("deepseek-reasoner", base_url=server.openai_base_url), s, max_tokens=100)
        assert agent.run_sync("go").stop_reason == "max_tokens"
        assert agent.run_sync("please continue").stop_reason == "end_turn"
        sent = server.requests[-1].body["messages"]
    assert sent[1] == {"role": "assistant", "content": ""}
    assert all(m.get("content") is not None or m.get("tool_calls") for m in sent)


class _EmptyContent(LoopbackServer):
    def _render(self, protocol: Any, n: int, model: str, blocks: Any, stop: str, usage: Any) -> Any:
        out = super()._render(protocol, n, model, blocks, stop, usage)
        if protocol == "openai" and out["choices"][0]["message"].get("content") is None:
            out["choices"][0]["message"]["content"] = ""  # vLLM and llama.cpp beside tool calls
        return out


def test_empty_content_beside_a_tool_call_is_not_recorded_nor_sent_to_anthropic() -> None:
    tools = [Tool("rd", lambda a: "x")]
    with _EmptyContent([[ToolUseBlock("c1", "rd", {})], "done", "anthropic done"]) as server:
        s = Session.create(SQLiteStore(":memory:"))
        Agent(OpenAICompatClient("qwen", base_url=server.openai_base_url), s, tools=tools).run_sync("go")
        assert [b.type for b in s.messages()[1].content] == ["tool_use"]
        # a history recorded before the fix (or imported) still holds the empty block
        s.record(Message("user", (TextBlock("now you"),)))
        s.record(Message("assistant", (TextBlock(""), ToolUseBlock("c2", "rd", {}))))
        s.record_tool_result("c2", "x")
        Agent(AnthropicClient("claude-sonnet-4-5", base_url=server.url), s, tools=tools).run_sync("and again")
        sent = server.requests[-1].body["messages"]
    texts = [b for m in sent for b in m["content"] if b["type"] == "text"]
    assert texts and all(b["text"].strip() for b in texts)
    c2 = next(m for m in sent if any(b.get("id") == "c2" for b in m["content"]))
    assert c2 == {"role": "assistant", "content": [{"type": "tool_use", "id": "c2", "name": "rd", "input": {}}]}
