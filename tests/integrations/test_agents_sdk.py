"""CtxmemSession against the real OpenAI Agents SDK and the loopback OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import (
    Agent,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

from ctxmem.clients.base import ModelRequest
from ctxmem.clients.loopback import LoopbackServer
from ctxmem.integrations.agents_sdk import CtxmemSession
from ctxmem.jsonl import export_lines
from ctxmem.messages import (
    Message,
    ThinkingBlock,
    ToolUseBlock,
    from_anthropic,
    validate_conversation,
)
from ctxmem.store import SQLiteStore

set_tracing_disabled(True)


@function_tool
def read_log(name: str) -> str:
    """Read a build log by name."""
    # a long, repetitive tool output: what masking exists for
    return f"log {name}: " + " ".join(f"line{i} compiled ok" for i in range(400)) + f" SECRET-{name}"


class Policy:
    """Answers each question with one tool call, then a final answer naming what it saw."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self.n = 0

    def __call__(self, request: ModelRequest) -> Any:
        self.requests.append(request)
        self.n += 1
        last = request.messages[-1]
        if last.tool_results:
            return f"done with {last.tool_results[0].tool_use_id}"
        return Message.assistant(ToolUseBlock(f"call_{self.n}", "read_log", {"name": f"run{self.n}"}))


def make_agent(server: LoopbackServer, api: str = "chat") -> Agent:
    client = AsyncOpenAI(base_url=server.openai_base_url, api_key="test-key", max_retries=0)
    model: Any = (OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel)(
        model="gpt-loopback", openai_client=client)
    return Agent(name="builder", instructions="You read logs.", tools=[read_log], model=model)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_runner_runs_share_history_and_the_session_exports(tmp_path: Any) -> None:
    policy = Policy()
    db = tmp_path / "agents.db"
    with LoopbackServer(policy=policy) as server:
        agent = make_agent(server)
        session = CtxmemSession("user-1", store=db)

        async def three_runs() -> list[Any]:
            return [await Runner.run(agent, q, session=session)
                    for q in ("first question", "second question", "third question")]

        for result in run(three_runs()):
            assert result.final_output.startswith("done with call_")
        assert not server.rejected
    # the third run's first request carried both earlier runs: questions, tool calls, outputs
    third = policy.requests[4]
    texts = json.dumps([m.text for m in third.messages])
    assert "first question" in texts and "second question" in texts and "third question" in texts
    assert any(r.tool_use_id == "call_1" for m in third.messages for r in m.tool_results)
    items = run(session.get_items())
    assert [i.get("type", "message") for i in items].count("function_call") == 3
    assert items[0] == {"content": "first question", "role": "user"}
    # a fresh store handle on the same file sees the same session; it exports as Anthropic JSONL
    with SQLiteStore(str(db)) as store:
        reopened = CtxmemSession("user-1", store=store)
        assert run(reopened.get_items()) == items
        lines = list(export_lines(reopened.session))
    exported = from_anthropic(json.loads(line) for line in lines)
    validate_conversation(exported)
    assert [m.role for m in exported] == ["user", "assistant", "user", "assistant"] * 3
    assert exported[1].tool_uses[0].name == "read_log"
    assert "SECRET-run1" in exported[2].tool_results[0].text


def test_protocol_semantics_and_history_is_never_destroyed() -> None:
    s = CtxmemSession("p", store="memory://")
    assert run(s.get_items()) == [] and run(s.pop_item()) is None
    items = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": '{"x": 1}', "id": "fc_1"},
        {"type": "function_call_output", "call_id": "c1", "output": "out"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search"}},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "bye", "annotations": [{"type": "url_citation"}]}]},
    ]
    run(s.add_items(items[:2]))
    run(s.add_items(items[2:]))
    assert run(s.get_items()) == items  # verbatim, item types ctxmem has no block for included
    assert run(s.get_items(limit=2)) == items[-2:]
    assert run(s.get_items(limit=0)) == [] and run(s.get_items(limit=-1)) == items
    from agents.memory import Session as SDKSession
    from agents.memory import SessionSettings

    assert isinstance(s, SDKSession)
    for settings in (SessionSettings(limit=3), {"limit": 3}):
        assert run(CtxmemSession("p", store=s.store, session_settings=settings).get_items()) == items[-3:]
    assert run(s.pop_item()) == items[-1]
    assert run(s.get_items()) == items[:-1]
    # the hosted web_search_call is assistant text of its JSON: counted by a preset's budget
    assert [m.role for m in s.session.messages()] == ["user", "assistant", "user", "assistant"]
    assert '"web_search_call"' in s.session.messages()[-1].text
    popped_head = s.store.chain("p").events[-1]
    assert "pop_item" in popped_head.event.text  # type: ignore[union-attr]
    run(s.clear_session())
    assert run(s.get_items()) == [] and run(s.pop_item()) is None
    (branch,) = s.branches()
    assert run(CtxmemSession(branch, store=s.store).get_items()) == items[:-1]  # the cleared branch was kept
    run(s.add_items([{"role": "user", "content": "again"}]))
    run(s.clear_session())
    assert len(s.branches()) == 2 and run(s.get_items()) == []


def test_bad_items_are_refused_with_one_clear_error() -> None:
    from ctxmem.errors import InputError

    s = CtxmemSession("bad", store="memory://")
    with pytest.raises(InputError, match="item 1"):
        run(s.add_items([{"role": "user", "content": "ok"}, {"type": "function_call", "call_id": 5, "name": "f",
                                                               "arguments": "{}"}]))
    assert run(s.get_items()) == []  # nothing half-written
    # arguments the model wrote badly: the SDK answers the call with an error output and goes
    # on, as SQLiteSession stores it (add_items refused it, and the run failed)
    call = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{not json"}
    out = {"type": "function_call_output", "call_id": "c", "output": "An error occurred: bad JSON"}
    run(s.add_items([{"role": "user", "content": "ok"}, call]))
    run(s.add_items([out]))
    assert run(s.get_items()) == [{"role": "user", "content": "ok"}, call, out]
    assert s.session.messages()[1].tool_uses[0].input == {"_unparsed_arguments": "{not json"}


def test_preset_builds_the_context_and_a_trailing_reply_does_not_break_the_next_run() -> None:
    policy = Policy()
    with LoopbackServer(policy=policy) as server:
        agent = make_agent(server)
        session = CtxmemSession("masked", store="memory://", preset="masking-200k", context_window=12000)

        async def six_runs() -> None:
            for k in range(6):
                await Runner.run(agent, f"question {k}", session=session)

        run(six_runs())
        assert not server.rejected
        # the stored history ends with the last run's answer; get_items is still valid input
        stored = run(session.get_items(limit=-1))
        built = run(session.get_items())
        assert stored[-1]["role"] == "assistant" and built[-1] == stored[-1]
        assert len(json.dumps(built)) < len(json.dumps(stored))
        report = session.last_report
        assert report is not None and report.tokens_out <= report.available < report.tokens_in
        assert len(report.masked) + len(report.dropped) > 0
        # the model saw masked outputs for old calls and the newest verbatim
        last = policy.requests[-1]
        validate_conversation(last.messages)
        outputs = [r.text for m in last.messages for r in m.tool_results]
        assert "SECRET-run11" in outputs[-1]  # the newest output verbatim
        assert " ".join(outputs).count("SECRET-run") < 6  # older ones masked or left out
        # bounded reads (the SDK's own write checks) stay verbatim
        assert run(session.get_items(limit=3)) == stored[-3:]


def test_preset_session_with_an_interrupted_turn_hands_it_back_verbatim() -> None:
    s = CtxmemSession("cut", store="memory://", preset="window-32k")
    assert run(s.get_items()) == []
    done = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    waiting = [{"role": "user", "content": "run it"},
               {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", "id": "fc_9"}]
    run(s.add_items(done))
    assert run(s.get_items()) == done  # ends in a final reply: built for the next input
    run(s.add_items(waiting))
    assert run(s.get_items()) == done + waiting


def test_two_handles_on_one_session_see_each_others_writes(tmp_path: Any) -> None:
    db = tmp_path / "two.db"
    a, b = CtxmemSession("shared", store=db), CtxmemSession("shared", store=SQLiteStore(str(db)))
    run(a.add_items([{"role": "user", "content": "1"}]))
    assert run(b.get_items()) == [{"role": "user", "content": "1"}]
    run(b.add_items([{"role": "assistant", "content": "2"}]))
    run(a.add_items([{"role": "user", "content": "3"}]))  # a's cached chain must extend past b's write
    assert [i["content"] for i in run(a.get_items())] == ["1", "2", "3"] == [i["content"] for i in run(b.get_items())]
    assert run(b.pop_item()) == {"role": "user", "content": "3"}
    assert [i["content"] for i in run(a.get_items())] == ["1", "2"]
    run(a.clear_session())
    assert run(b.get_items()) == [] and run(b.pop_item()) is None
    run(a.add_items([{"role": "user", "content": "4"}]))
    run(a.get_items())[0]["content"] = "mutated by the caller"
    assert run(a.get_items()) == [{"role": "user", "content": "4"}]


def test_the_example_script_runs_against_an_openai_compatible_server(tmp_path: Any) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
    try:
        import agents_sdk_session
    finally:
        sys.path.pop(0)
    db = tmp_path / "ex.db"
    with LoopbackServer(policy=Policy()) as server:
        answers = agents_sdk_session.main(["first?", "second?", "--base-url", server.openai_base_url,
                                           "--db", str(db), "--preset", "masking-200k", "--window", "20000"])
        assert not server.rejected and len(server.requests) == 4
    assert answers == ["done with call_1", "done with call_3"]
    assert len(run(CtxmemSession("builder", store=db).get_items())) == 8


class ThinkingPolicy(Policy):
    """Policy's answers, each tool call preceded by a reasoning block (a Responses ``reasoning`` item)."""

    def __call__(self, request: ModelRequest) -> Any:
        reply = super().__call__(request)
        if isinstance(reply, Message):
            return Message.assistant(ThinkingBlock(f"look at run{self.n}", ""), *reply.content)
        return reply


def test_runner_on_the_responses_api_runs_streams_and_shares_history(tmp_path: Any) -> None:
    """OpenAIResponsesModel (the SDK's default API) against the loopback's /v1/responses."""
    policy = ThinkingPolicy()
    db = tmp_path / "responses.db"
    with LoopbackServer(policy=policy) as server:
        agent = make_agent(server, api="responses")
        session = CtxmemSession("resp-1", store=db)

        async def runs() -> list[Any]:
            out = [(await Runner.run(agent, q, session=session)).final_output for q in ("first?", "second?")]
            streamed = Runner.run_streamed(agent, "third?", session=session)
            kinds = [event.type async for event in streamed.stream_events()]
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
            return [*out, streamed.final_output]

        assert run(runs()) == ["done with call_1", "done with call_3", "done with call_5"]
        assert not server.rejected
        assert {r.path for r in server.requests} == {"/v1/responses"}
        assert [bool(r.body.get("stream")) for r in server.requests] == [False] * 4 + [True] * 2
    # the streamed run's first request carried both earlier runs, their reasoning intact
    third = policy.requests[4]
    assert third.system == "You read logs."
    assert [m.role for m in third.messages] == ["user", "assistant", "user", "assistant"] * 2 + ["user"]
    assert isinstance(third.messages[1].content[0], ThinkingBlock)
    assert "SECRET-run3" in third.messages[6].tool_results[0].text
    items = run(CtxmemSession("resp-1", store=db).get_items())
    kinds = [i.get("type", "message") for i in items]
    assert kinds.count("reasoning") == kinds.count("function_call") == kinds.count("function_call_output") == 3
    exported = from_anthropic(json.loads(line) for line in export_lines(CtxmemSession("resp-1", store=db).session))
    validate_conversation(exported)
    assert len(exported) == 12


def test_a_preset_session_on_the_responses_api_compacts_and_stays_valid() -> None:
    policy = Policy()
    with LoopbackServer(policy=policy) as server:
        agent = make_agent(server, api="responses")
        session = CtxmemSession("resp-masked", store="memory://", preset="masking-200k", context_window=12000)

        async def six_runs() -> None:
            for k in range(6):
                await Runner.run(agent, f"question {k}", session=session)

        run(six_runs())
        assert not server.rejected
        outputs = [r.text for m in policy.requests[-1].messages for r in m.tool_results]
        assert "SECRET-run11" in outputs[-1] and " ".join(outputs).count("SECRET-run") < 6


def test_one_session_serves_several_event_loops() -> None:
    """Its asyncio.Lock bound to the first loop: concurrent writes in a second asyncio.run
    (a second Runner.run_sync) failed, and 4 of 10 items were lost."""
    s = CtxmemSession("loops", store="memory://")

    async def many(tag: str) -> None:
        await asyncio.gather(*(s.add_items([{"role": "user", "content": f"{tag}{i}"}]) for i in range(5)))

    asyncio.run(many("a"))
    asyncio.run(many("b"))
    items = asyncio.run(s.get_items())
    assert sorted(i["content"] for i in items) == sorted([f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)])


def test_wrong_arguments_are_ctxmem_errors_naming_the_field() -> None:
    from ctxmem.errors import ConfigError, InputError
    from ctxmem.integrations.anthropic_native import context_management
    from ctxmem.integrations.langchain import CtxmemMiddleware

    with pytest.raises(ConfigError) as exc:
        CtxmemSession(None)  # type: ignore[arg-type]  # was: a session with a random id, then "no session None"
    assert exc.value.field == "session_id"
    with pytest.raises(InputError) as exc2:
        asyncio.run(CtxmemSession("lim").get_items(limit="5"))  # type: ignore[arg-type]  # was: TypeError
    assert exc2.value.field == "limit"
    with pytest.raises(InputError, match="items must be a list of items, got one str"):
        asyncio.run(CtxmemSession("one").add_items("hello"))  # type: ignore[arg-type]  # was: "item 0 ... got str"
    for make in (lambda: CtxmemMiddleware(None), lambda: context_management(None)):  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match="a preset is needed") as exc:  # was: a bare AssertionError
            make()
        assert exc.value.field == "preset"


def test_custom_and_hosted_tool_calls_are_counted_and_stay_paired_under_a_preset() -> None:
    """Items ctxmem had no block for (custom tool calls and outputs, hosted mcp_call) made no
    content events: a preset's budget never counted them (108K tokens of JSON went out under
    a report of 98), and masking the message a custom output was attached to dropped the
    output and left its call unanswered."""
    import json

    from ctxmem.tokens import get_tokenizer

    big = "stack frame " * 3000
    s = CtxmemSession("budget", store="memory://", preset="window-32k", context_window=4000)
    items: list[dict[str, Any]] = [{"role": "user", "content": "go"}]
    for k in range(4):
        items += [
            {"type": "custom_tool_call", "call_id": f"ct{k}", "name": "apply_patch", "input": big, "id": f"ctc_{k}"},
            {"type": "custom_tool_call_output", "call_id": f"ct{k}", "output": big},
            {"type": "mcp_call", "id": f"mcp_{k}", "server_label": "fs", "name": "read", "arguments": "{}", "output": big},
            {"role": "assistant", "content": f"step {k} done"},
            {"role": "user", "content": f"next {k}"},
        ]
    run(s.add_items(items))
    built = run(s.get_items())
    sent = len(get_tokenizer("o200k_base").encode(json.dumps(built)))
    assert s.last_report.tokens_out <= s.last_report.available and sent < 3 * s.last_report.available

    m = CtxmemSession("paired", store="memory://", preset="masking-200k", context_window=6000)
    items = [{"role": "user", "content": "fix the build"}]
    for k in range(4):
        items += [
            {"type": "function_call", "call_id": f"c{k}", "name": "read_log", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": f"x{k}", "name": "apply_patch", "input": "*** patch"},
            {"type": "function_call_output", "call_id": f"c{k}", "output": "line ok\n" * 1500},
            {"type": "custom_tool_call_output", "call_id": f"x{k}", "output": "patched"},
            {"role": "assistant", "content": f"round {k}"},
            {"role": "user", "content": "again"},
        ]
    run(m.add_items(items))
    built = run(m.get_items())
    assert m.last_report.masked  # some outputs were masked
    for call_type, out_type in (("function_call", "function_call_output"), ("custom_tool_call", "custom_tool_call_output")):
        calls = {i["call_id"] for i in built if i.get("type") == call_type}
        outs = {i["call_id"] for i in built if i.get("type") == out_type}
        assert calls == outs and calls, call_type


def test_the_recall_tool_answers_from_the_session_log() -> None:
    from agents.tool_context import ToolContext

    s = CtxmemSession("recall", store="memory://", preset="masking-200k")
    run(s.add_items([{"role": "user", "content": "go"},
                     {"type": "function_call", "call_id": "c1", "name": "read", "arguments": "{}"},
                     {"type": "function_call_output", "call_id": "c1", "output": "line a\nSECRET b\nline c"}]))
    tool = s.recall_tool()
    assert tool.name == "recall" and "handle" in tool.params_json_schema["properties"]

    def call(args: str) -> str:
        ctx = ToolContext(context=None, tool_name="recall", tool_call_id="x", tool_arguments=args)
        return str(run(tool.on_invoke_tool(ctx, args)))

    assert call('{"handle": "c1", "grep": "SECRET"}') == "2: SECRET b"
    assert "recall failed" in call('{"handle": "nope"}')


def test_a_postgresql_url_opens_the_shared_store_as_the_cli_does() -> None:
    """The integrations refused postgresql:// URLs that the CLI and the MCP server accept."""
    import pg_server

    url = pg_server.shared().fresh_url()
    a = CtxmemSession("pg", store=url)
    run(a.add_items([{"role": "user", "content": "hello from one process"}]))
    b = CtxmemSession("pg", store=url)  # another handle, as another process would open it
    assert run(b.get_items()) == [{"role": "user", "content": "hello from one process"}]


def test_a_preset_session_reads_each_call_only_what_was_added_and_builds_what_a_full_read_builds(
    tmp_path: Any,
) -> None:
    """get_items with a preset keeps its reading of the chain and extends it with what was
    added since (parallel outputs joining a turn item by item, another handle's write, a
    pop_item, a clear_session); every answer is what a handle that reads the whole chain gives."""
    from ctxmem.events import message_spans
    from ctxmem.integrations.responses import to_responses
    from ctxmem.samples import synthetic_session

    db = str(tmp_path / "v.db")
    msgs = synthetic_session(12, seed=6)
    s = CtxmemSession("v", store=db, preset="masking-200k", context_window=4000)
    # a handle that reads the whole chain on every call (its reading dropped each time); both
    # build every time, so their strategies carry the same boundary from call to call
    full = CtxmemSession("v", store=db, preset="masking-200k", context_window=4000)

    def check() -> None:
        got = run(s.get_items())
        full._view = None
        assert got == run(full.get_items())
        view = s._view
        assert view is not None
        spans = list(message_spans(s.store.chain("v").events))
        assert view.messages == [m for m, _ in spans] and view.ids == [tuple(e) for _, e in spans]

    run(s.add_items(to_responses(msgs[:3])))
    check()
    for k in range(3, 9, 2):  # a call per round, and its outputs item by item
        run(s.add_items(to_responses(msgs[k : k + 1])))
        for item in to_responses(msgs[k + 1 : k + 2]):  # outputs join the user turn one by one
            run(s.add_items([item]))
        check()
    other = CtxmemSession("v", store=db)  # another handle writes the next round
    run(other.add_items(to_responses(msgs[9:13])))
    check()
    r = s.last_report
    assert r is not None and (r.masked or r.dropped)  # the budget bites: compacted contexts compared
    run(s.pop_item())
    check()
    run(s.add_items(to_responses(msgs[13:17])))
    check()
    run(s.clear_session())
    run(s.add_items(to_responses(msgs[:3])))
    check()


def test_a_preset_session_hands_out_new_items_each_call_with_their_exact_values() -> None:
    """get_items keeps each message's items as JSON between calls and parses them in one go:
    what it hands out must still be new objects every call (the SDK and users may mutate
    them), and values JSON cannot carry through orjson (a NaN, an integer past 64 bits) must
    come back as they were stored."""
    import math

    s = CtxmemSession("fresh", store="memory://", preset="masking-200k", context_window=3000)
    items: list[dict[str, Any]] = [{"role": "user", "content": "start", "big": 2**70}]
    for k in range(6):
        items += [
            {"type": "function_call", "call_id": f"c{k}", "name": "read_log", "arguments": "{}"},
            {"type": "function_call_output", "call_id": f"c{k}", "output": f"run {k} ok\n" * 400},
            {"role": "assistant", "content": f"round {k}"},
            {"role": "user", "content": f"next {k}", "score": 0.1 * k},
        ]
    items.append({"role": "user", "content": "last", "weight": float("nan")})  # its own message: kept verbatim
    run(s.add_items(items))
    first = run(s.get_items())
    assert s.last_report.masked  # some outputs are the strategy's own messages (placeholders)
    expected = json.loads(json.dumps(first))  # a deep copy (NaN survives json)
    assert first[0]["big"] == 2**70 and type(first[0]["big"]) is int
    assert math.isnan(first[-1]["weight"])
    assert [i.get("score") for i in first if "score" in i] == [i["score"] for i in items if "score" in i][-len(
        [i for i in first if "score" in i]):]
    for item in first:  # a caller scribbles over everything it was given
        for key in list(item):
            item[key] = "scribbled"
    second = run(s.get_items())
    assert json.dumps(second) == json.dumps(expected)  # (json.dumps: NaN != NaN in ==)
    assert all(a is not b for a, b in zip(first, second, strict=True))


def test_an_output_is_stored_with_the_name_of_the_call_it_answers_however_far_back() -> None:
    """add_items names each function output's tool from the latest stored call of that id
    (read back only as far as needed, not the whole session each turn), or from a call
    among the same items."""
    from ctxmem.events import ToolResultEvent

    s = CtxmemSession("names", store="memory://")
    run(s.add_items([{"role": "user", "content": "go"},
                     {"type": "function_call", "call_id": "old", "name": "build", "arguments": "{}"}]))
    for k in range(30):  # many calls in between
        run(s.add_items([{"type": "function_call", "call_id": f"c{k}", "name": f"tool{k}", "arguments": "{}"},
                         {"type": "function_call_output", "call_id": f"c{k}", "output": "ok"}]))
    run(s.add_items([{"type": "function_call", "call_id": "c3", "name": "renamed", "arguments": "{}"}]))
    run(s.add_items([{"type": "function_call_output", "call_id": "old", "output": "built"},
                     {"type": "function_call_output", "call_id": "c3", "output": "again"},
                     {"type": "function_call_output", "call_id": "nowhere", "output": "?"}]))
    names = [(se.event.result.tool_use_id, se.event.tool_name) for se in s.store.chain("names").events
             if isinstance(se.event, ToolResultEvent)]
    assert names[:2] == [("c0", "tool0"), ("c1", "tool1")]
    assert names[-3:] == [("old", "build"), ("c3", "renamed"), ("nowhere", None)]


# ----------------------------------------------------------------- paired item types (shell, computer, …)


def _paired_turn(i: int, out_lines: int) -> list[dict[str, Any]]:
    """A turn of the item types the SDK pairs by call_id beyond function calls, each output large."""
    log = "".join(f"cc -O2 src/file{i}_{j}.c -o obj/file{j}.o\n" for j in range(out_lines))
    shot = "data:image/png;base64," + "".join(f"iVBOR{i:03d}{j:06d}" for j in range(out_lines * 3))
    return [
        {"role": "user", "content": f"run the build, step {i}"},
        {"type": "reasoning", "id": f"rs_{i}", "summary": [{"type": "summary_text", "text": "build it"}]},
        {"type": "shell_call", "id": f"sh_{i}", "call_id": f"shell_{i}", "status": "completed",
         "action": {"commands": ["make"], "timeout_ms": 1000, "max_output_length": 100000}},
        {"type": "computer_call", "id": f"cu_{i}", "call_id": f"comp_{i}", "status": "completed",
         "action": {"type": "screenshot"}, "pending_safety_checks": []},
        {"type": "local_shell_call", "id": f"ls_{i}", "call_id": f"local_{i}", "status": "completed",
         "action": {"type": "exec", "command": ["ls"], "env": {}}},
        {"type": "apply_patch_call", "id": f"ap_{i}", "call_id": f"patch_{i}", "status": "completed",
         "operation": {"type": "update_file", "path": "a.c", "diff": "@@ -1 +1 @@\n-a\n+b\n"}},
        {"type": "shell_call_output", "call_id": f"shell_{i}", "max_output_length": 100000,
         "output": [{"stdout": log, "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
        {"type": "computer_call_output", "call_id": f"comp_{i}",
         "output": {"type": "computer_screenshot", "image_url": shot}},
        {"type": "local_shell_call_output", "call_id": f"local_{i}", "output": log},
        {"type": "apply_patch_call_output", "call_id": f"patch_{i}", "status": "completed", "output": log},
        {"type": "mcp_approval_request", "id": f"mcpr_{i}", "server_label": "fs", "name": "rm", "arguments": "{}"},
        {"type": "message", "id": f"msg_{i}", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": f"build {i} ok", "annotations": []}]},
    ]


def _assert_every_call_answered_after_it(items: list[dict[str, Any]]) -> None:
    calls = {i["call_id"]: k for k, i in enumerate(items) if "call_id" in i and not i["type"].endswith("_output")}
    outs = {i["call_id"]: k for k, i in enumerate(items) if "call_id" in i and i["type"].endswith("_output")}
    assert set(calls) == set(outs), sorted(set(calls) ^ set(outs))
    assert all(calls[c] < outs[c] for c in calls)


def test_shell_computer_and_other_paired_items_are_counted_by_a_window_budget() -> None:
    """Items of types ctxmem had no block for (shell_call_output, computer_call_output,
    local_shell_call_output, apply_patch_call*, mcp_approval_request) made no content events,
    yet get_items handed them back verbatim: window-32k reported 117 tokens out of 30,720
    while the items it returned were 160K tokens of JSON. Now each is counted (a call and
    its output as a tool call and result), so a recount of what get_items returns fits."""
    from ctxmem.integrations.responses import item_type
    from ctxmem.tokens import get_tokenizer

    s = CtxmemSession("paired-window", store="memory://", preset="window-32k")
    turns = [_paired_turn(i, 150) for i in range(8)]  # ~13K tokens of JSON a turn
    for turn in turns:
        run(s.add_items(turn))
    got = run(s.get_items())
    report = s.last_report
    sent = sum(get_tokenizer("o200k_base").count(json.dumps(item)) for item in got)  # independent recount
    assert report.tokens_out <= report.available and sent <= report.available, (sent, report)
    assert report.dropped and sent > report.available // 3  # the budget bites, and what fits is sent
    # the latest turns come back verbatim (their user text is carried by the pinned first message)
    assert got[-len(turns[-1]) + 1:] == turns[-1][1:]
    assert {"shell_call_output", "computer_call_output"} <= {item_type(i) for i in got}
    _assert_every_call_answered_after_it(got)
    # stored as tool calls named by their type and results holding the output's JSON, its
    # texts after it, raw (so a reducer and the recall tool see their lines)
    msgs = s.session.messages()
    assert [b.name for b in msgs[1].tool_uses] == ["shell_call", "computer_call", "local_shell_call",
                                                   "apply_patch_call"]
    head, _, stdout = msgs[2].tool_results[0].text.partition("\n")
    assert json.loads(head)["output"][0]["stdout"] == "" and stdout == turns[0][6]["output"][0]["stdout"]
    assert json.loads(msgs[2].tool_results[1].text) == {k: v for k, v in turns[0][7].items() if k != "id"}
    from ctxmem.errors import InputError

    with pytest.raises(InputError, match="item 0 is not JSON-serializable"):  # was: a bare TypeError
        run(s.add_items([{"type": "shell_call_output", "call_id": "b", "output": [{"stdout": b"raw"}]}]))


def test_masking_a_turn_keeps_each_paired_call_with_its_output() -> None:
    """Masking a function_call_output rewrote its message from its blocks, and the
    shell_call_output items stored beside it (no block of their own) were dropped while
    their calls stayed: the Responses API refuses such input. A masked paired output now
    stays its type with the placeholder as its text (shell stdout, local shell / apply_patch
    output); one whose type holds no text (a screenshot) is left out with its call."""
    from agents.tool_context import ToolContext

    from ctxmem.tokens import get_tokenizer

    s = CtxmemSession("paired-mask", store="memory://", preset="masking-200k", context_window=20000)
    for i in range(30):
        run(s.add_items([
            {"role": "user", "content": f"step {i}"},
            {"type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": "read_log",
             "arguments": "{\"name\": \"b\"}", "status": "completed"},
            {"type": "shell_call", "id": f"sh_{i}", "call_id": f"shell_{i}", "status": "completed",
             "action": {"commands": ["make"], "timeout_ms": 1000, "max_output_length": 1000}},
            {"type": "function_call_output", "call_id": f"call_{i}", "output": "log line\n" * 300},
            {"type": "shell_call_output", "call_id": f"shell_{i}", "max_output_length": 1000,
             "output": [{"stdout": "ok", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
            {"type": "message", "id": f"msg_{i}", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": f"done {i}", "annotations": []}]},
        ]))
    got = run(s.get_items())
    assert s.last_report.masked
    _assert_every_call_answered_after_it(got)
    assert sum(i.get("type") == "shell_call_output" for i in got) == 30

    m = CtxmemSession("paired-mask-big", store="memory://", preset="masking-200k", context_window=40000)
    turns = [_paired_turn(i, 40) for i in range(16)]
    for turn in turns:
        run(m.add_items(turn))
    got = run(m.get_items())
    report = m.last_report
    assert report.masked
    _assert_every_call_answered_after_it(got)
    sent = sum(get_tokenizer("o200k_base").count(json.dumps(item)) for item in got)
    assert sent <= report.available, (sent, report)
    masked = [i for i in got if i.get("type") == "shell_call_output" and "[masked shell_call" in i["output"][0]["stdout"]]
    assert masked and masked[0]["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}
    for kind in ("local_shell_call_output", "apply_patch_call_output"):
        assert any(i.get("type") == kind and i["output"].startswith(f"[masked {kind[:-7]}") for i in got), kind
    # a masked screenshot has no text form: its call went with it; the latest turn is whole
    assert sum(i.get("type") == "computer_call" for i in got) < len(turns)
    assert got[-len(turns[-1]):] == turns[-1]
    # the placeholder's handle recalls the original output from the session log
    handle = masked[0]["call_id"]
    ctx = ToolContext(context=None, tool_name="recall", tool_call_id="x", tool_arguments="{}")
    args = json.dumps({"handle": handle, "grep": f"file{handle.split('_')[1]}_7\\.c"})
    assert str(run(m.recall_tool().on_invoke_tool(ctx, args))).endswith(f"file{handle.split('_')[1]}_7.c -o obj/file7.o")


def test_a_screenshot_left_out_with_its_call_takes_the_reasoning_before_the_call_too() -> None:
    """A masked computer_call_output has no text form, so it is left out with its call; the
    reasoning item right before that call stayed, and the Responses API refuses a reasoning
    item without the item that followed it."""
    s = CtxmemSession("shots", store="memory://", preset="masking-200k", context_window=30000)
    for i in range(12):
        shot = "data:image/png;base64," + "".join(f"iVBOR{i:03d}{j:06d}" for j in range(40))
        log = "".join(f"cc -O2 src/file{i}_{j}.c -o obj/file{j}.o\n" for j in range(120))
        run(s.add_items([
            {"role": "user", "content": f"look at the screen, step {i}"},
            {"type": "reasoning", "id": f"rs_{i}", "summary": [{"type": "summary_text", "text": "look"}]},
            {"type": "computer_call", "id": f"cu_{i}", "call_id": f"comp_{i}", "status": "completed",
             "action": {"type": "screenshot"}, "pending_safety_checks": []},
            {"type": "function_call", "id": f"fc_{i}", "call_id": f"call_{i}", "name": "read_log",
             "arguments": "{}", "status": "completed"},
            {"type": "computer_call_output", "call_id": f"comp_{i}",
             "output": {"type": "computer_screenshot", "image_url": shot}},
            {"type": "function_call_output", "call_id": f"call_{i}", "output": log},
            {"type": "message", "id": f"msg_{i}", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": f"saw {i}", "annotations": []}]},
        ]))
    got = run(s.get_items())
    assert s.last_report.masked
    calls = [i for i in got if i.get("type") == "computer_call"]
    assert 0 < len(calls) < 12  # some screenshots were left out with their calls
    _assert_every_call_answered_after_it(got)
    for k, item in enumerate(got):
        if item.get("type") == "reasoning":
            assert k + 1 < len(got) and got[k + 1].get("type") == "computer_call", (k, got[k + 1:k + 2])
    assert sum(i.get("type") == "reasoning" for i in got) == len(calls)
    assert sum(i.get("type") == "function_call" for i in got) > len(calls)  # the masked turns stay
