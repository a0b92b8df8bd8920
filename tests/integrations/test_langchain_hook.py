"""CtxmemMiddleware in LangChain v1's create_agent and LangGraph's create_react_agent."""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import Field

from ctxmem.errors import InputError
from ctxmem.integrations.langchain import CtxmemMiddleware, from_langchain, to_langchain
from ctxmem.messages import Message, TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock
from ctxmem.tokens import count_messages, get_tokenizer
from support import chain_counting_store


@tool
def read_log(name: str) -> str:
    """Read a build log."""
    return f"log {name}: " + " ".join(f"line{i} compiled ok" for i in range(300)) + f" SECRET-{name}"


class ScriptedChat(GenericFakeChatModel):
    """langchain_core's fake chat model, remembering what it was sent (bind_tools is a no-op)."""

    seen: list[list[Any]] = Field(default_factory=list)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


def script(turns: int) -> list[AIMessage]:
    replies = []
    for k in range(turns):
        replies.append(AIMessage(content="", tool_calls=[{"id": f"call_{k}", "name": "read_log",
                                                          "args": {"name": f"run{k}"}, "type": "tool_call"}]))
        replies.append(AIMessage(content=f"done {k}"))
    return replies


def tokens(messages: list[Any]) -> int:
    _, msgs = from_langchain(messages)
    return sum(c.total for c in count_messages(msgs, get_tokenizer("o200k_base")))


def run_agent(session_id: str, turns: int) -> tuple[ScriptedChat, CtxmemMiddleware, dict[str, Any]]:
    """A create_agent graph with the middleware (masking-200k in a 7,000-token window), run
    for ``turns`` questions, each calling read_log once: (model, middleware, final state)."""
    model = ScriptedChat(messages=iter(script(turns)))
    model.seen = []
    memory = CtxmemMiddleware("masking-200k", store="memory://", session_id=session_id, context_window=7000)
    agent = create_agent(model, tools=[read_log], system_prompt="You read logs.", middleware=[memory])
    state: dict[str, Any] = {"messages": []}
    for k in range(turns):
        state = agent.invoke({"messages": [*state["messages"], HumanMessage(f"question {k}")]})
    return model, memory, state


def count_conversions(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-element list counting the LangChain messages the middleware converts from now on."""
    import ctxmem.integrations.langchain as lc_mod

    converted = [0]
    real = lc_mod.from_langchain

    def counting(messages: Any, **kw: Any) -> Any:
        converted[0] += len(messages)
        return real(messages, **kw)

    monkeypatch.setattr(lc_mod, "from_langchain", counting)
    return converted


def test_create_agent_records_everything_and_the_model_sees_the_compacted_context() -> None:
    turns = 8
    model, memory, state = run_agent("lc", turns)
    # the graph state is untouched: every message, every full tool output
    assert len(state["messages"]) == 4 * turns
    assert sum("SECRET-run" in str(m.content) for m in state["messages"] if isinstance(m, ToolMessage)) == turns
    # the ctxmem session recorded the same conversation, final answer included
    recorded = memory.session("lc").messages()
    assert recorded == from_langchain(state["messages"])[1]
    # the last model call got the preset's context: within budget, newest output verbatim
    last = model.seen[-1]
    assert isinstance(last[0], SystemMessage) and last[0].content == "You read logs."
    assert tokens(last) < tokens(state["messages"]) and memory.last_report.tokens_out <= memory.last_report.available
    outputs = [str(m.content) for m in last if isinstance(m, ToolMessage)]
    assert "SECRET-run7" in outputs[-1]
    assert sum("SECRET-run" in o for o in outputs) < turns  # older outputs masked or left out
    assert len(memory.last_report.masked) + len(memory.last_report.dropped) > 0
    ids = {c["id"] for m in last if isinstance(m, AIMessage) for c in m.tool_calls}
    assert all(m.tool_call_id in ids for m in last if isinstance(m, ToolMessage))  # pairs intact


def test_pre_model_hook_in_create_react_agent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent
    turns = 6
    model = ScriptedChat(messages=iter(script(turns)))
    model.seen = []
    memory = CtxmemMiddleware("window-32k", store="memory://", context_window=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, [read_log], pre_model_hook=memory.pre_model_hook)
    state: dict[str, Any] = {"messages": []}
    for k in range(turns):
        state = agent.invoke({"messages": [*state["messages"], HumanMessage(f"q{k}")]},
                             config={"configurable": {"thread_id": "t-1"}})
    assert len(state["messages"]) == 4 * turns
    assert tokens(model.seen[-1]) <= 4000 < tokens(state["messages"])
    assert memory.last_report.dropped  # the window dropped old turns for the model only
    assert len(memory.session("t-1").messages()) >= 4 * turns - 1  # thread id names the session


def test_conversion_round_trips_both_ways() -> None:
    messages = [
        Message.user("Compile it."),
        Message.assistant(ThinkingBlock("plan", "sig"), TextBlock("Compiling."),
                          ToolUseBlock("c1", "compile", {"path": "k.py"}), ToolUseBlock("c2", "check", {})),
        Message("user", (ToolResultBlock("c1", "ok"), ToolResultBlock("c2", "bad", is_error=True),
                         TextBlock("Continue."))),
        Message.assistant("Done."),
    ]
    lc = to_langchain(messages, system="Be brief.")
    assert [type(m).__name__ for m in lc] == ["SystemMessage", "HumanMessage", "AIMessage", "ToolMessage",
                                              "ToolMessage", "HumanMessage", "AIMessage"]
    assert lc[4].status == "error" and lc[3].name == "compile"
    assert from_langchain(lc) == ("Be brief.", messages)


def test_a_system_message_in_the_graph_state_reaches_the_model() -> None:
    """It was counted in the budget, then dropped: the model never saw it."""
    for system_prompt in (None, "Answer briefly."):
        model = ScriptedChat(messages=iter([AIMessage("arr")]))
        model.seen = []
        memory = CtxmemMiddleware("window-32k", store="memory://", session_id="sys")
        agent = create_agent(model, tools=[], system_prompt=system_prompt, middleware=[memory])
        agent.invoke({"messages": [SystemMessage("You are a pirate."), HumanMessage("hello")]})
        seen = model.seen[-1]
        assert [type(m).__name__ for m in seen] == ["SystemMessage", "HumanMessage"]  # one system message, first
        assert "You are a pirate." in seen[0].content
        if system_prompt:
            assert system_prompt in seen[0].content


def test_concurrent_runs_without_a_thread_id_each_get_their_own_conversation() -> None:
    """agent.batch without thread ids shares the "default" session: record and build ran
    unlocked, so a model call could be built from another run's conversation (about one
    batch in ten showed one user's secret to every call)."""
    class Echo(GenericFakeChatModel):
        seen: list[Any] = Field(default_factory=list)

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> Any:
            from langchain_core.outputs import ChatGeneration, ChatResult

            self.seen.append([str(m.content) for m in messages])
            return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])

    model = Echo(messages=iter([]))
    memory = CtxmemMiddleware("window-32k", store="memory://")
    agent = create_agent(model, tools=[], middleware=[memory])
    for trial in range(10):
        model.seen = []
        names = ["ALICE", "BOB", "CAROL", "DAVE"]
        agent.batch([{"messages": [HumanMessage(f"I am {n}, trial {trial}")]} for n in names])
        assert all(len(seen) == 1 for seen in model.seen), model.seen
        assert sorted(seen[0] for seen in model.seen) == sorted(f"I am {n}, trial {trial}" for n in names)


def test_a_tool_call_with_malformed_arguments_is_a_call_of_the_conversation() -> None:
    """create_agent answers an invalid tool call with an error ToolMessage; the middleware
    ignored AIMessage.invalid_tool_calls, saw an orphan result and refused the next turn."""
    @tool
    def read(name: str) -> str:
        """Read a log."""
        return "ok"

    bad = AIMessage("", invalid_tool_calls=[{"id": "call_1", "name": "read", "args": '{"name": "run1"',
                                             "error": "Malformed args.", "type": "invalid_tool_call"}])
    model = ScriptedChat(messages=iter([bad, AIMessage("sorry"), AIMessage("done")]))
    model.seen = []
    agent = create_agent(model, tools=[read], middleware=[CtxmemMiddleware("window-32k", store="memory://", session_id="inv")])
    state = agent.invoke({"messages": [HumanMessage("read run1")]})
    state = agent.invoke({"messages": [*state["messages"], HumanMessage("try again")]})
    last = model.seen[-1]
    calls = [c["id"] for m in last if isinstance(m, AIMessage) for c in m.tool_calls]
    assert calls == ["call_1"] and any(isinstance(m, ToolMessage) and m.tool_call_id == "call_1" for m in last)
    _, msgs = from_langchain(state["messages"])
    assert msgs[1].tool_uses[0].input == {"_unparsed_arguments": '{"name": "run1"'}


def test_a_masking_preset_registers_the_recall_tool_its_placeholders_name() -> None:
    """Placeholders said "recall it with the recall tool", and no such tool was offered."""
    memory = CtxmemMiddleware("masking-200k", store="memory://", session_id="rc", context_window=7000)
    assert [t.name for t in memory.tools] == ["recall"]
    assert CtxmemMiddleware("window-32k", store="memory://").tools == []
    # summarize-128k's facts section names "recall <handle>" on each line: it offered none
    assert [t.name for t in CtxmemMiddleware("summarize-128k", store="memory://").tools] == ["recall"]
    model = ScriptedChat(messages=iter([
        *script(6)[:-1],
        AIMessage("", tool_calls=[{"id": "rc1", "name": "recall", "args": {"handle": "call_0", "grep": "SECRET"}}]),
        AIMessage("found it"),
    ]))
    model.seen = []
    agent = create_agent(model, tools=[read_log], middleware=[memory])
    state: dict[str, Any] = {"messages": []}
    for k in range(6):
        state = agent.invoke({"messages": [*state["messages"], HumanMessage(f"question {k}")]})
    answer = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "rc1"]
    assert answer and "SECRET-run0" in str(answer[0].content) and answer[0].status != "error"


def test_each_turn_reads_and_converts_only_what_it_added_and_builds_what_the_full_path_builds(
    tmp_path: Any,
) -> None:
    """A long run: after the first call, a turn neither re-reads the session's chain nor
    re-converts the graph's whole list, and its context is, message for message, what a
    middleware given new message objects every turn (so it converts and compares the whole
    list each time) builds over its own session."""
    from ctxmem.samples import synthetic_session
    msgs = synthetic_session(40, seed=3)
    lc = to_langchain(msgs[:41])
    store = chain_counting_store(str(tmp_path / "lc.db"))
    memory = CtxmemMiddleware("masking-200k", store=store, session_id="long", context_window=6000)
    full = CtxmemMiddleware("masking-200k", store=str(tmp_path / "full.db"), session_id="long", context_window=6000)
    def whole(messages: list[Any]) -> Any:  # forgets the objects it saw: converts and compares the whole list
        full._seen.clear()
        return full.context([m.model_copy() for m in messages])

    memory.context(lc)
    whole(lc)  # both build every turn (a strategy carries its boundary)
    chains = store.chains
    for k in range(41, len(msgs) - 1, 2):
        lc = [*lc, *to_langchain(msgs[k : k + 2])]  # the graph appends a round
        got = memory.context(lc)
        assert store.chains == chains  # no whole-chain read on the way
        want = whole(lc)
        assert from_langchain(got) == from_langchain(want)
    assert memory.last_report.masked  # the budget made it mask: the contexts compared are compacted ones
    assert memory.session("long").messages() == from_langchain(lc)[1] == full.session("long").messages()
    # a rewritten state (an edited earlier message) is still noticed: rewound, re-recorded
    edited = [HumanMessage("a different request"), *lc[1:]]
    memory.context(edited)
    assert memory.session("long").messages() == from_langchain(edited)[1]


def test_a_conversion_memo_gives_the_same_messages_and_reuses_the_kept_ones() -> None:
    """What a loop converts turn after turn: lists that share a prefix of the same message
    objects, then differ (a context whose boundary moved, placeholders replacing outputs).
    With a memo the output equals a plain conversion every time, and the shared messages'
    LangChain objects are reused, not rebuilt."""
    import random

    from ctxmem.integrations.langchain import ConversionMemo
    from ctxmem.samples import synthetic_session

    msgs = synthetic_session(12, seed=4)
    memo = ConversionMemo()
    first = to_langchain(msgs[:15], "sys", memo=memo)
    assert first == to_langchain(msgs[:15], "sys")
    grown = to_langchain(msgs[:19], "sys", memo=memo)  # the same list, grown: its prefix reused
    assert grown == to_langchain(msgs[:19], "sys") and all(a is b for a, b in zip(first, grown, strict=False))
    second = to_langchain(msgs[5:20], "sys", memo=memo)  # a new start: converted messages still reused
    assert second == to_langchain(msgs[5:20], "sys")
    assert len({id(m) for m in first} & {id(m) for m in second}) >= 8
    # a tool result whose call is no longer in the list loses its name, as without a memo
    assert [getattr(m, "name", None) for m in second] == [getattr(m, "name", None) for m in
                                                          to_langchain(msgs[5:20], "sys")]
    rng = random.Random(7)
    placeholder = {k: Message("user", tuple(ToolResultBlock(r.tool_use_id, "[masked]") for r in m.tool_results))
                   for k, m in enumerate(msgs) if m.tool_results}
    for _ in range(60):  # random windows, random masked outputs, another system prompt now and then
        lo, hi = sorted(rng.sample(range(len(msgs) + 1), 2))
        view = [placeholder[k] if k in placeholder and rng.random() < 0.3 else msgs[k] for k in range(lo, hi)
                if rng.random() < 0.9]  # now and then a message left out: a result loses its call
        system = rng.choice(["sys", None, "other"])
        assert to_langchain(view, system, memo=memo) == to_langchain(view, system)
    calls = next(k for k, m in enumerate(msgs) if m.tool_uses)
    kept = [msgs[0], *msgs[calls : calls + 2]]
    assert to_langchain(kept, memo=memo) == to_langchain(kept)
    assert to_langchain([msgs[0], msgs[calls + 1]], memo=memo) == to_langchain([msgs[0], msgs[calls + 1]])
    twice = [msgs[1], msgs[2], msgs[1], msgs[2]]  # a call id twice: which name a result takes depends on order
    assert to_langchain(twice, memo=memo) == to_langchain(twice)
    assert to_langchain(twice[:3], memo=memo) == to_langchain(twice[:3])


def test_a_create_agent_run_converts_each_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a real graph the model call's list leads with a system message made anew each call,
    and the state at the end of a run has none: neither makes the middleware convert and
    compare the whole conversation again. Each message is converted about once over the
    run (the whole list each call would be quadratic)."""
    converted = count_conversions(monkeypatch)
    turns = 8
    model, memory, state = run_agent("once", turns)
    total = len(state["messages"])  # 4 per turn
    assert memory.session("once").messages() == from_langchain(state["messages"])[1]
    # each message once, plus the leading system message of each of the 2 × turns model calls
    assert converted[0] <= total + 2 * turns + 4, converted[0]
    assert isinstance(model.seen[-1][0], SystemMessage) and model.seen[-1][0].content == "You read logs."


def test_a_checkpointed_agent_converts_each_message_once_across_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a checkpointer each run starts from equal copies of the stored messages, not the
    objects the middleware saw: equal messages are taken as seen (the whole conversation
    was converted and compared again at the start of every run), and a changed one is still
    noticed."""
    from langgraph.checkpoint.memory import InMemorySaver

    converted = count_conversions(monkeypatch)
    turns = 8
    model = ScriptedChat(messages=iter(script(turns)))
    model.seen = []
    memory = CtxmemMiddleware("masking-200k", store="memory://", session_id="ck", context_window=7000)
    agent = create_agent(model, tools=[read_log], system_prompt="You read logs.", middleware=[memory],
                         checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    for k in range(turns):  # each run is handed only the new question: the rest comes from the checkpoint
        state = agent.invoke({"messages": [HumanMessage(f"question {k}")]}, config)
    total = len(state["messages"])
    assert total == 4 * turns
    assert memory.session("ck").messages() == from_langchain(state["messages"])[1]
    assert converted[0] <= total + 2 * turns + 4, converted[0]  # was ~ turns × total / 2
    # a checkpointed message changed behind the middleware's back (a state update): re-recorded
    edited = [state["messages"][0].model_copy(update={"content": "another first question"}), *state["messages"][1:]]
    memory.record(edited)
    assert memory.session("ck").messages() == from_langchain(edited)[1]


def test_a_server_reusing_tool_call_ids_is_recorded_under_fresh_ids_and_the_model_sees_its_own() -> None:
    """A server that numbers its calls call_0 every turn: the second tool turn made the
    middleware raise (the session refuses a reused id) and the agent died. The session now
    stores the reused call under a fresh id with its result, a checkpointed run re-sending
    the same messages records nothing twice, and the model is handed the ids the graph holds,
    each result after its call."""
    from langgraph.checkpoint.memory import InMemorySaver

    turns = 3
    replies = []
    for k in range(turns):
        replies.append(AIMessage(content="", tool_calls=[{"id": "call_0", "name": "read_log",
                                                          "args": {"name": f"run{k}"}, "type": "tool_call"}]))
        replies.append(AIMessage(content=f"done {k}"))
    model = ScriptedChat(messages=iter(replies))
    model.seen = []
    memory = CtxmemMiddleware("masking-200k", store="memory://", session_id="dup", context_window=7000)
    agent = create_agent(model, tools=[read_log], middleware=[memory], checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t"}}
    for k in range(turns):
        state = agent.invoke({"messages": [HumanMessage(f"question {k}")]}, config)
    assert state["messages"][-1].content == f"done {turns - 1}"
    session = memory.session("dup")
    recorded = session.messages()
    assert len(recorded) == len(from_langchain(state["messages"])[1]) == 4 * turns  # nothing recorded twice
    calls = [u.id for m in recorded for u in m.tool_uses]
    assert calls == ["call_0", "call_0_2", "call_0_3"]
    for prev, m in itertools.pairwise(recorded):  # each result right after its call
        assert [r.tool_use_id for r in m.tool_results] == [u.id for u in prev.tool_uses][: len(m.tool_results)]
    results = [r for m in recorded for r in m.tool_results]
    assert [r.text.rsplit(" ", 1)[-1] for r in results] == [f"SECRET-run{k}" for k in range(turns)]
    # the model got the graph's ids, every result right after the call it answers
    last = model.seen[-1]
    assert [c["id"] for m in last if isinstance(m, AIMessage) for c in m.tool_calls] == ["call_0"] * turns
    for k, m in enumerate(last):
        if isinstance(m, ToolMessage):
            assert isinstance(last[k - 1], AIMessage) and m.tool_call_id == last[k - 1].tool_calls[0]["id"]
    assert "SECRET-run2" in str([m for m in last if isinstance(m, ToolMessage)][-1].content)
    # the whole list converted and compared again (new objects) maps to the same session: no rewind
    before = session.messages_with_ids()
    memory._seen.clear()
    memory.record([m.model_copy() for m in state["messages"]], "dup")
    assert memory.session("dup").messages_with_ids() == before


def test_responses_api_function_call_parts_are_the_tool_calls_they_repeat() -> None:
    """ChatOpenAI on the Responses API puts each call in the AIMessage's content as a
    function_call part too: it was refused as a part with no ctxmem equivalent."""
    ai = AIMessage(content=[{"type": "function_call", "call_id": "call_1", "name": "read_log",
                             "arguments": '{"name": "build"}', "id": "fc_1"}],
                   tool_calls=[{"id": "call_1", "name": "read_log", "args": {"name": "build"}, "type": "tool_call"}])
    _, msgs = from_langchain([HumanMessage("why?"), ai, ToolMessage("ok", tool_call_id="call_1")])
    assert msgs[1].content == (ToolUseBlock("call_1", "read_log", {"name": "build"}),)
    with pytest.raises(InputError, match="reasoning"):  # still refused: no ctxmem equivalent
        from_langchain([AIMessage(content=[{"type": "reasoning", "id": "rs_1", "summary": []}])])
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    from ctxmem.clients.loopback import LoopbackServer

    def policy(request: Any) -> Message:
        if request.messages[-1].tool_results:
            return Message.assistant(TextBlock("Shared memory limit."))
        return Message.assistant(ToolUseBlock("call_1", "read_log", {"name": "build"}))

    with LoopbackServer(policy=policy) as server:
        chat = ChatOpenAI(model="gpt-4.1", base_url=server.openai_base_url, api_key="k", use_responses_api=True)
        memory = CtxmemMiddleware("masking-200k", store="memory://", session_id="resp")
        state = create_agent(chat, tools=[read_log], middleware=[memory]).invoke(
            {"messages": [HumanMessage("Why did the build fail?")]})
        assert not server.rejected
    assert "Shared memory limit." in str(state["messages"][-1].content)
    assert [u.id for m in memory.session("resp").messages() for u in m.tool_uses] == ["call_1"]


def test_react_hook_counts_the_agents_tools_and_prompt_and_the_recall_tool_is_bound() -> None:
    """pre_model_hook built without the agent's tools and prompt: the request the model got
    was over the preset's budget, and its placeholders named a recall tool never bound."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent
    from ctxmem.integrations.langchain import _tool_specs
    from ctxmem.messages import tool_to_anthropic
    from ctxmem.tokens import count_request

    class Binding(ScriptedChat):
        bound: list[list[str]] = Field(default_factory=list)

        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            self.bound.append([t.name for t in tools])
            return self

    @tool("read_log")
    def read_big(name: str) -> str:
        """Read a build log."""
        return "\n".join(f"line {i} of {name}" for i in range(400)) + f"\nSECRET-{name}"

    read_big.description = "Read a build log. " + "Details about log formats. " * 300  # a big schema
    prompt = "You fix builds. " * 300
    turns = 5
    model = Binding(messages=iter(script(turns)))
    model.seen, model.bound = [], []
    memory = CtxmemMiddleware("masking-200k", store="memory://", session_id="react", context_window=9000)
    tools = [read_big, *memory.tools]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        agent = create_react_agent(model, tools, prompt=prompt, pre_model_hook=memory.react_hook(tools, prompt=prompt))
    state: dict[str, Any] = {"messages": []}
    for k in range(turns):
        state = agent.invoke({"messages": [*state["messages"], HumanMessage(f"q{k}")]})
    assert model.bound[-1] == ["read_log", "recall"]  # the tool the placeholders name is offered
    schemas = [tool_to_anthropic(t) for t in _tool_specs(tools)]
    tok = get_tokenizer("o200k_base")
    available = memory.last_report.available
    for sent in model.seen:
        assert isinstance(sent[0], SystemMessage) and sent[0].content == prompt  # the prompt once, first
        assert sum(isinstance(m, SystemMessage) for m in sent) == 1
        system, msgs = from_langchain(sent)
        assert count_request(msgs, tok, system=system, tools=schemas).total <= available
    assert sum("recall tool" in str(m.content) for m in model.seen[-1]) > 0  # it did mask
    assert "SECRET-run4" in str([m for m in model.seen[-1] if isinstance(m, ToolMessage)][-1].content)
    assert memory.last_report.tokens_out <= available
