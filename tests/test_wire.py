"""ctxmem.wire: raw SDK loops (anthropic, openai packages) against the loopback server.

The real SDKs send what :func:`anthropic_request` / :func:`openai_request` return; the
loopback server validates every request the way the providers do (tool pairing, cache
breakpoints, window) and bills usage; :func:`record_response` records the SDK's own reply
objects; :func:`run_tool` runs ``recall`` against the session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ctxmem import wire
from ctxmem.clients import ModelRequest
from ctxmem.clients.loopback import LoopbackServer
from ctxmem.errors import InputError, InvalidConversationError
from ctxmem.events import ModelCallEvent
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import (
    Message,
    TextBlock,
    ToolSpec,
    ToolUseBlock,
    block_to_anthropic,
    from_anthropic,
    from_openai,
    to_anthropic,
    validate_conversation,
)
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore
from support import chain_counting_store, three_read_rounds

READ = ToolSpec("read_file", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}})
FILES = {"a.txt": "alpha " * 40, "b.txt": "beta " * 40}


def read_file(path: str) -> str:
    return FILES[path]


def reader(req: ModelRequest) -> Any:
    done = {u.input.get("path") for m in req.messages for u in m.tool_uses}
    todo = [p for p in sorted(FILES) if p not in done]
    if todo:
        return [ToolUseBlock(f"toolu_{len(done)}", "read_file", {"path": todo[0]})]
    return "all read"


def test_a_raw_anthropic_loop_in_a_few_lines() -> None:
    anthropic = pytest.importorskip("anthropic")
    with LoopbackServer(reader) as server:
        client = anthropic.Anthropic(base_url=server.url, api_key="test", max_retries=0)
        session = Session.create(MemoryStore())
        session.record(Message.user("Read every file."))
        for _ in range(5):
            params = wire.anthropic_request(session, "masking-200k", system="You read files.", tools=[READ])
            reply = wire.record_response(session, client.messages.create(model="claude-test", max_tokens=512, **params))
            if not reply.tool_uses:
                break
            for use in reply.tool_uses:
                session.record_tool_result(use.id, wire.run_tool(session, use, {"read_file": read_file}), tool_name=use.name)
        assert reply.text == "all read" and not server.rejected and len(server.requests) == 3
        sent = server.requests[0].body
        # tools: the caller's plus the recall tool the masking context names, cache-marked
        assert [t["name"] for t in sent["tools"]] == ["read_file", "recall"]
        assert sent["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert any("cache_control" in b for m in sent["messages"] for b in m["content"])
        calls = [e.event for e in session.events() if isinstance(e.event, ModelCallEvent)]
        assert len(calls) == 3 and all(c.request_id and c.estimated_input_tokens for c in calls)
        assert calls[1].cache_read_tokens > 0  # the breakpoints were honoured by the server
        validate_conversation(session.messages())


def test_a_raw_openai_loop() -> None:
    openai = pytest.importorskip("openai")
    with LoopbackServer(reader) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
        session = Session.create(MemoryStore())
        session.record(Message.user("Read every file."))
        for _ in range(5):
            params = wire.openai_request(session, "window-32k", system="You read files.", tools=[READ])
            assert params["messages"][0] == {"role": "system", "content": "You read files."}
            reply = wire.record_response(session, client.chat.completions.create(model="qwen3", max_tokens=256, **params))
            if not reply.tool_uses:
                break
            for use in reply.tool_uses:
                session.record_tool_result(use.id, wire.run_tool(session, use, {"read_file": read_file}), tool_name=use.name)
        assert reply.text == "all read" and not server.rejected
        assert [t["function"]["name"] for t in server.requests[0].body["tools"]] == ["read_file"]  # window: no recall


def test_recall_through_the_wire_returns_the_masked_original(tmp_path: Path) -> None:
    data = "\n".join(json.dumps(m) for m in to_anthropic(synthetic_session(300, 5))).encode()
    with SQLiteStore(str(tmp_path / "s.db")) as store:
        session = import_jsonl(store, data, tokenizers=["o200k_base"])
        params = wire.anthropic_request(session, "masking-200k")
        assert [t["name"] for t in params["tools"]] == ["recall"]
        masked = [b for m in params["messages"] for b in m["content"]
                  if b["type"] == "tool_result" and isinstance(b["content"], str) and b["content"].startswith("[masked")]
        assert masked
        handle = masked[0]["tool_use_id"]
        original = next(r.text for m in session.messages() for r in m.tool_results if r.tool_use_id == handle)
        out = wire.run_tool(session, {"type": "tool_use", "id": "r1", "name": "recall", "input": {"handle": handle}})
        assert out == original and len(out) > len(masked[0]["content"])
        bad = wire.run_tool(session, ToolUseBlock("r2", "recall", {"handle": "missing"}))
        assert wire.is_error_output(bad) and "missing" in bad
        assert wire.is_error_output(wire.run_tool(session, ToolUseBlock("r3", "nope", {}), {}))


def test_expect_input_sends_a_history_that_ends_in_the_answer() -> None:
    session = Session.create(MemoryStore())
    session.record(Message.user("hi"))
    session.record(Message.assistant("hello"))
    with pytest.raises(InvalidConversationError):
        wire.anthropic_request(session, "window-32k")
    params = wire.anthropic_request(session, "window-32k", expect_input=True, cache_breakpoints=None)
    assert [m["role"] for m in params["messages"]] == ["user", "assistant"]
    assert not any("cache_control" in b for m in params["messages"] for b in m["content"])


def test_sdk_objects_convert_as_they_come() -> None:
    types = pytest.importorskip("anthropic.types")
    msg = types.Message(
        id="msg_1", type="message", role="assistant", model="claude-test", stop_reason="tool_use",
        stop_sequence=None, usage=types.Usage(input_tokens=10, output_tokens=3, cache_read_input_tokens=4),
        content=[types.TextBlock(type="text", text="let me look"),
                 types.ToolUseBlock(type="tool_use", id="t1", name="read_file", input={"path": "a.txt"})],
    )
    expected = Message("assistant", (TextBlock("let me look"), ToolUseBlock("t1", "read_file", {"path": "a.txt"})))
    assert from_anthropic(msg) == [expected] and from_anthropic([msg]) == [expected]
    r = wire.response_from_sdk(msg)
    assert (r.stop_reason, r.usage.input_tokens, r.usage.cache_read_tokens, r.id) == ("tool_use", 10, 4, "msg_1")
    chat = pytest.importorskip("openai.types.chat")
    completion = chat.ChatCompletion(
        id="c1", object="chat.completion", created=0, model="qwen3",
        choices=[{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.txt"}'}}]}}],
        usage={"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
    )
    r2 = wire.response_from_sdk(completion)
    assert r2.tool_uses == (ToolUseBlock("t1", "read_file", {"path": "a.txt"}),) and r2.usage.input_tokens == 20
    _, msgs = from_openai([completion.choices[0].message])
    assert msgs[0].tool_uses == r2.tool_uses
    with pytest.raises(InputError, match="expected an Anthropic Message"):
        wire.response_from_sdk(42)
    # a paid-for reply whose tool arguments were cut off (a local model at max_tokens) is
    # kept, as the Agent's own client keeps it, to be answered with an error result
    cut = {"choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"id": "t2", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.t'}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5}}
    r3 = wire.response_from_sdk(cut)
    assert r3.content == (ToolUseBlock("t2", "read_file", {"_unparsed_arguments": '{"path": "a.t'}),)
    assert r3.usage.output_tokens == 5


# --------------------------------------------------------------------------- incremental across calls


def _same_as_a_fresh_load(session: Session, tokenizer: str = "o200k_base") -> None:
    from ctxmem.config import load_preset
    from ctxmem.context import History

    builder = load_preset("masking-200k").builder()
    got = wire.session_history(session, builder)
    fresh = History.from_session(session, tokenizer)
    assert list(got.messages) == list(fresh.messages)
    assert list(got.counts) == list(fresh.counts) and got.total == fresh.total
    assert [tuple(e) for e in got.event_ids] == [tuple(e) for e in fresh.event_ids]


def test_wire_calls_extend_one_history_and_match_a_fresh_load(tmp_path: Path) -> None:
    store = chain_counting_store(str(tmp_path / "w.db"))
    session = Session.create(store, tokenizers=["o200k_base"])
    session.record(Message.user("Read every file, many times."))
    sent = []
    for turn in range(40):
        params = wire.anthropic_request(session, "masking-200k", system="You read files.", tools=[READ])
        sent.append(params["messages"])
        use = ToolUseBlock(f"toolu_{turn}", "read_file", {"path": "a.txt"})
        wire.record_response(session, {"role": "assistant", "content": [{"type": "text", "text": f"turn {turn}"},
                                                                        block_to_anthropic(use)], "model": "m",
                                       "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 2}})
        session.record_tool_result(use.id, f"output {turn}: " + "alpha " * 200, tool_name="read_file")
    assert store.chains == 1  # one load, then only what each turn appended
    assert store.events_read == 39 * 4  # per turn: model call, assistant text, its tool call, the result
    _same_as_a_fresh_load(session)
    # the built context is what a fresh builder over a fresh load sends
    from ctxmem.config import load_preset

    fresh = load_preset("masking-200k").builder().build(session, system="You read files.", tools=[READ],
                                                        record=False)
    last = wire.anthropic_request(session, "masking-200k", system="You read files.", tools=[READ])
    assert last["messages"] == wire.anthropic_request(session, "masking-200k", system="You read files.",
                                                      tools=[READ])["messages"]
    strip = [{**m, "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]]}
             for m in last["messages"]]
    assert strip == to_anthropic(list(fresh.messages))
    assert len({json.dumps(m) for m in sent}) == 40  # a new request every turn


def test_a_rewind_a_fork_or_another_handle_s_write_reloads(tmp_path: Path) -> None:
    store, session, ids = three_read_rounds(str(tmp_path / "r.db"))
    wire.openai_request(session, "window-32k")
    loads = store.chains
    _same_as_a_fresh_load(session)  # (the fresh load in the check is one chain read)
    assert store.chains == loads + 1
    session.rewind(ids[1])  # back to the second call, then a different continuation
    session.record_tool_result("t1", "a different output", tool_name="read_file")
    _same_as_a_fresh_load(session)
    assert store.chains == loads + 3  # the chain no longer passes through the head seen: reloaded
    # parallel results recorded one by one: the second joins the message the first opened
    session.record(Message.assistant(ToolUseBlock("p1", "read_file", {}), ToolUseBlock("p2", "read_file", {})))
    session.record_tool_result("p1", "first half", tool_name="read_file")
    _same_as_a_fresh_load(session)
    assert store.chains == loads + 4  # a clean extension: no reload
    other = Session.open(SQLiteStore(str(tmp_path / "r.db")), session.id)  # another handle, same file
    other.record_tool_result("p2", "second half", tool_name="read_file")
    _same_as_a_fresh_load(session)
    assert store.chains == loads + 6  # the new result continues the last message: reloaded
    assert session.messages()[-1].tool_results[1].text == "second half"
    params = wire.openai_request(session, "window-32k")
    assert [m["role"] for m in params["messages"]][-2:] == ["tool", "tool"]


def test_a_preset_object_gets_one_builder_across_calls(tmp_path: Path) -> None:
    """A Preset object (not only a name) keeps its builder, and so its strategy's caches and the
    session's History, from one call to the next; another Preset object or client gets its own."""
    from ctxmem.config import load_preset

    store = chain_counting_store(str(tmp_path / "p.db"))
    session = Session.create(store, tokenizers=["o200k_base"])
    session.record(Message.user("task"))
    preset = load_preset("masking-200k")
    first = wire.builder_for(preset)
    assert wire.builder_for(preset) is first
    assert wire.builder_for(load_preset("masking-200k")) is not first  # another object: its own builder
    client = object()
    assert wire.builder_for(preset, client=client) is not first
    assert wire.builder_for(preset, client=client) is wire.builder_for(preset, client=client)
    for turn in range(5):
        wire.anthropic_request(session, preset, tools=[READ])
        session.record(Message.assistant(ToolUseBlock(f"t{turn}", "read_file", {"path": "a.txt"})))
        session.record_tool_result(f"t{turn}", f"out {turn}", tool_name="read_file")
    assert store.chains == 1  # one load; each later call extended the same History
