"""Preset.builder() -> ContextBuilder: the one way a preset becomes a request.

Covers the builder's settings, declared dependencies (an LLM summarizer's client, from the
Agent or from a client spec), summaries through an Agent with fallback on failure, the
``expect_input`` build for a history ending in the model's answer, and the session protocol.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ctxmem.agent import Agent
from ctxmem.cli import cli
from ctxmem.clients import ModelRequest, ScriptedClient
from ctxmem.config import ContextBuilder, load_preset
from ctxmem.context import History, SessionLike
from ctxmem.context.summarization import Summarization
from ctxmem.errors import ConfigError, InvalidConversationError, ProviderError
from ctxmem.events import CompactionEvent, NoteEvent
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import Message, ToolUseBlock, to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import MemoryStore, SQLiteStore
from support import chain_counting_store, three_read_rounds

LLM_PRESET = """
type = "summarization"
tokenizer = "o200k_base"
[budget]
context_window = 12000
reserve_output = 1000
threshold = 0.9
[params]
summarizer = "llm"
chunk_tokens = 2000
chunk_summary_tokens = 200
summary_tokens = 1200
"""


def _preset(tmp_path: Path, text: str, name: str = "llm-12k") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _long_session(tmp_path: Path, turns: int = 40) -> tuple[SQLiteStore, Session]:
    store = SQLiteStore(str(tmp_path / "s.db"))
    data = "\n".join(json.dumps(m) for m in to_anthropic(synthetic_session(turns, 3))).encode()
    return store, import_jsonl(store, data, tokenizers=["o200k_base"])


def test_builder_holds_the_presets_settings_and_overrides() -> None:
    p = load_preset("window-32k")
    b = p.builder()
    assert isinstance(b, ContextBuilder) and b.name == "window-32k"
    assert (b.budget.context_window, b.budget.reserve_output, b.tokenizer, b.pinned) == (32768, 2048, "o200k_base", 1)
    b2 = p.builder(context_window=20_000, tokenizer="cl100k_base", pinned=2, reserve_output=4096)
    assert (b2.budget.context_window, b2.budget.reserve_output, b2.tokenizer, b2.pinned) == (20_000, 4096, "cl100k_base", 2)
    with pytest.raises(ConfigError, match="no input room"):
        p.builder(context_window=1000, reserve_output=1000)
    # a history counted with another tokenizer is refused, naming the fix
    history = History.from_messages([Message.user("hi")], "cl100k_base")
    with pytest.raises(ConfigError, match=r"builder.history\(session\)"):
        b.build(history)


def test_the_session_satisfies_the_strategy_protocol() -> None:
    assert isinstance(Session.create(MemoryStore()), SessionLike)


def test_llm_presets_declare_their_client_and_are_validated_without_one(tmp_path: Path) -> None:
    p = load_preset(_preset(tmp_path, LLM_PRESET))
    assert p.dependencies() == {"client": "agent"}
    with pytest.raises(ConfigError, match=r"params.summarizer_model.*pass client="):
        p.builder()
    built = p.builder(client=ScriptedClient(["x"]))
    assert isinstance(built.strategy, Summarization)
    # a client spec in the preset is built by the builder itself
    spec = load_preset(_preset(tmp_path, LLM_PRESET.replace('summarizer = "llm"', 'summarizer = "llm"\nsummarizer_model = "scripted"'), "spec"))
    assert spec.dependencies() == {"client": "scripted"}
    assert isinstance(spec.builder().strategy, Summarization)
    with pytest.raises(ConfigError, match="summarizer_model"):
        load_preset(_preset(tmp_path, LLM_PRESET.replace('summarizer = "llm"', 'summarizer = "llm"\nsummarizer_model = "nope:x"'), "bad")).builder()
    # a pipeline declares what its core needs
    pipe = _preset(tmp_path, 'type = "pipeline"\n[budget]\ncontext_window = 60000\n[params]\ncore = "summarization"\n'
                   '[params.core_params]\nsummarizer = "llm"\n', "pipe")
    assert load_preset(pipe).dependencies() == {"client": "agent"}
    # the keyword a user reaches for is the config field, with a clear error, not AttributeError
    with pytest.raises(ConfigError, match="needs a model client"):
        Summarization(summarizer="llm")


def _summarizing_policy(fail: bool) -> tuple[list[ModelRequest], object]:
    seen: list[ModelRequest] = []

    def policy(req: ModelRequest) -> str:
        if len(req.messages) == 1:  # the summarizer's single prompt message
            seen.append(req)
            if fail:
                raise ProviderError("summarizer down", provider="test")
            return "LLM-SUMMARY: the agent tuned BLOCK_M and hit a shared-memory limit."
        return "done"

    return seen, policy


def test_agent_summarizes_through_its_own_client(tmp_path: Path) -> None:
    store, session = _long_session(tmp_path)
    with store:
        seen, policy = _summarizing_policy(fail=False)
        client = ScriptedClient(policy=policy)  # type: ignore[arg-type]
        result = Agent(client, session, preset=str(_preset(tmp_path, LLM_PRESET))).run_sync()
        assert result.stop_reason == "end_turn" and seen, "the preset's LLM summarizer used the agent's client"
        sent = client.requests[-1]
        assert "LLM-SUMMARY" in to_anthropic(sent.messages).__repr__()
        summaries = [e.event for e in session.events() if isinstance(e.event, CompactionEvent) and e.event.summary]
        assert summaries and "LLM-SUMMARY" in (summaries[-1].summary or "")


def test_a_summarizer_failure_falls_back_and_is_recorded(tmp_path: Path) -> None:
    store, session = _long_session(tmp_path)
    with store:
        seen, policy = _summarizing_policy(fail=True)
        client = ScriptedClient(policy=policy)  # type: ignore[arg-type]
        result = Agent(client, session, preset=str(_preset(tmp_path, LLM_PRESET))).run_sync()
        assert result.stop_reason == "end_turn" and seen
        notes = [e.event for e in session.events() if isinstance(e.event, NoteEvent)]
        assert any("summarizer down" in n.text and "failure" in n.tags for n in notes)
        # the context was still built (extractive fallback) and fits the window
        assert "LLM-SUMMARY" not in repr(to_anthropic(client.requests[-1].messages))


def test_context_build_takes_a_summarizer_model(tmp_path: Path) -> None:
    store, session = _long_session(tmp_path)
    store.close()
    preset = str(_preset(tmp_path, LLM_PRESET))
    runner = CliRunner()
    args = ["context", "build", "--session", session.id, "--preset", preset, "--db", str(tmp_path / "s.db"), "--json",
            "--no-messages"]
    bad = runner.invoke(cli, args)
    assert bad.exit_code != 0 and "summarizer_model" in bad.output and "Traceback" not in bad.output
    ok = runner.invoke(cli, [*args, "--summarizer-model", "scripted"])
    # the scripted client has no replies queued: the failure falls back (extractive) and is reported
    assert ok.exit_code == 0, ok.output
    report = json.loads(ok.output)["report"]
    assert report["summarized"] and any("fell back to extractive" in n for n in report["notes"])
    wrong = runner.invoke(cli, ["context", "build", "--session", session.id, "--preset", "window-32k",
                                 "--db", str(tmp_path / "s.db"), "--summarizer-model", "scripted"])
    assert wrong.exit_code != 0 and "no LLM summarizer" in wrong.output


def test_a_history_ending_in_the_answer_builds_when_input_is_coming(tmp_path: Path) -> None:
    session = Session.create(MemoryStore())
    session.record(Message.user("task"))
    session.record(Message.assistant("the answer"))
    for name in ("window-32k", "masking-200k", "summarize-128k", "pipeline-200k", "dump-1m"):
        b = load_preset(name).builder()
        with pytest.raises(InvalidConversationError, match=r"ends with the model's answer \(message 1\).*expect_input"):
            b.build(session)
        built = b.build(session, expect_input=True)
        assert [m.role for m in built.messages] == ["user", "assistant"], name
    # pending tool calls still need their results, whatever comes next
    session.record(Message.user("next"))
    session.record(Message.assistant(ToolUseBlock("t1", "read_file", {"path": "a"})))
    with pytest.raises(InvalidConversationError, match=r"tool calls have no results \(t1\)"):
        load_preset("window-32k").builder().build(session, expect_input=True)


def test_an_agent_takes_a_ready_builder() -> None:
    b = load_preset("window-32k").builder(context_window=20_000)
    agent = Agent(ScriptedClient(["ok"]), Session.create(MemoryStore()), preset=b, max_tokens=3000)
    assert agent.strategy is b.strategy and agent.context_window == 20_000
    assert agent.budget.reserve_output == 3000  # raised to hold the reply the agent asks for
    with pytest.raises(ConfigError, match="already holds"):
        Agent(ScriptedClient(["ok"]), Session.create(MemoryStore()), preset=b, tokenizer="cl100k_base")
    with pytest.raises(ConfigError, match="not both"):
        Agent(ScriptedClient(["ok"]), Session.create(MemoryStore()), preset=b, strategy="window-32k")


def test_context_build_caches_what_it_derives_but_never_writes_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ctxmem context build` is a dry run: the session's events are never written. By
    default it saves the derived-state cache (the facts index), so the next build of the
    session restores it instead of reading every tool output again; the context is the
    same either way. `--no-cache` writes nothing at all."""
    import shutil
    import sqlite3

    store, session = _long_session(tmp_path, turns=520)  # > SNAPSHOT_MIN messages: a snapshot is due
    store.close()
    db = tmp_path / "s.db"
    bare = tmp_path / "bare.db"
    shutil.copy(db, bare)

    def rows(path: Path) -> tuple[int, int, list[str]]:
        with sqlite3.connect(path) as conn:
            events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            head = conn.execute("SELECT head_event_id FROM sessions").fetchone()[0]
            kinds = [k for (k,) in conn.execute("SELECT kind FROM derived_state ORDER BY kind")]
        return events, head, kinds

    def build(path: Path, *extra: str) -> dict[str, object]:
        r = CliRunner().invoke(cli, ["context", "build", "--session", session.id, "--preset", "masking-200k",
                                     "--window", "32k", "--db", str(path), "--json", *extra], catch_exceptions=False)
        assert r.exit_code == 0, r.output
        out = json.loads(r.output)
        del out["build_ms"]
        return out

    from ctxmem.context.salience import SalienceIndex

    reads: list[int] = []
    real_read = SalienceIndex._read
    monkeypatch.setattr(SalienceIndex, "_read", lambda self, m, i, ids: (reads.append(i), real_read(self, m, i, ids)))

    events, head, kinds = rows(db)
    assert kinds == []
    first = build(db)
    assert first["report"]["sections"].get("facts")  # the build did read the facts index
    assert len(reads) >= 1000
    after = rows(db)
    assert after[:2] == (events, head)  # the session itself is untouched
    assert [k.split("/")[0] for k in after[2]] == ["salience"]
    reads.clear()
    assert build(db) == first  # restored from the cache: the same context
    assert len(reads) < 10  # only what the snapshot did not cover
    reads.clear()
    assert build(bare, "--no-cache") == first
    assert len(reads) >= 1000
    assert rows(bare) == (events, head, [])


def test_a_dry_runs_cache_never_waits_for_another_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`context build` saves its cache only if the store's write lock is free right now: a
    read-only command must not queue behind an import or a live agent (5 s × 40 retries)
    for a cache. It goes through `try_save_derived`, never the waiting `save_derived`."""
    import sqlite3

    from ctxmem.errors import StoreBusyError

    store, session = _long_session(tmp_path, turns=520)
    store.close()
    db = tmp_path / "s.db"
    waited: list[str] = []

    def waiting_save(self: SQLiteStore, session_id: str, kind: str, key: str, data: bytes) -> None:
        waited.append(kind)
        raise StoreBusyError(self.path, 1)

    monkeypatch.setattr(SQLiteStore, "save_derived", waiting_save)
    args = ["context", "build", "--session", session.id, "--preset", "masking-200k", "--window", "32k",
            "--db", str(db), "--json", "--no-messages"]

    def derived() -> int:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM derived_state").fetchone()[0])

    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for the whole build
    try:
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 0, r.output
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert waited == [] and derived() == 0  # skipped, not waited for
    r = CliRunner().invoke(cli, args)  # the lock is free: the same command keeps the cache
    assert r.exit_code == 0, r.output
    assert waited == [] and derived() == 1


def test_context_build_takes_latest_and_prefixes_and_refuses_a_zero_window(tmp_path: Path) -> None:
    """`context build --session` reads a session as every other command does (an id, a
    unique prefix, latest); --window 0 was silently the preset's window; a store that does
    not exist is named, not created."""
    store, session = _long_session(tmp_path, turns=20)
    store.close()
    db = str(tmp_path / "s.db")

    def build(*args: str) -> tuple[int, str]:
        r = CliRunner().invoke(cli, ["context", "build", "--preset", "window-32k", "--json", *args])
        return r.exit_code, r.output

    outs = []
    for sid in (session.id, session.id[:6], "latest"):
        code, out = build("--session", sid, "--db", db)
        assert code == 0, out
        body = json.loads(out)
        del body["build_ms"]
        outs.append(body)
    assert outs[0] == outs[1] == outs[2]
    code, out = build("--session", "latest", "--db", db, "--window", "0")
    assert code == 2 and "at least 1 token" in out
    with pytest.raises(Exception, match="at least 1 token"):
        load_preset("window-32k").budget(0)
    missing = tmp_path / "none" / "x.db"
    code, out = build("--session", "latest", "--db", str(missing))
    assert code == 1 and "no session store at" in out and not missing.parent.exists()


def test_context_build_of_a_transcript_ending_in_the_answer_is_for_the_next_input(tmp_path: Path) -> None:
    """An imported transcript most often ends with the model's answer: `context build` built
    nothing ("line 4: the history ends with an assistant message"); it now builds the context
    the next user message will follow, and says so. Unanswered tool calls stay an error."""
    f = tmp_path / "t.jsonl"
    f.write_text('{"role": "user", "content": "task"}\n{"role": "assistant", "content": "the answer"}\n')
    db = str(tmp_path / "s.db")
    runner = CliRunner()
    assert runner.invoke(cli, ["sessions", "import", str(f), "--db", db]).exit_code == 0
    r = runner.invoke(cli, ["context", "build", "--session", "latest", "--preset", "window-32k", "--db", db, "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["for_next_input"] is True and [m["role"] for m in out["messages"]] == ["user", "assistant"]
    r = runner.invoke(cli, ["context", "build", "--session", "latest", "--preset", "window-32k", "--db", db])
    assert "the context the next user message will follow" in r.output
    f.write_text('{"role": "user", "content": "task"}\n'
                 '{"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "run", "input": {}}]}\n')
    assert runner.invoke(cli, ["sessions", "import", str(f), "--db", db]).exit_code == 0
    r = runner.invoke(cli, ["context", "build", "--session", "latest", "--preset", "window-32k", "--db", db])
    assert r.exit_code == 1 and "tool calls have no results (t1)" in r.output and "line " not in r.output


# --------------------------------------------------------------------------- build(session), turn after turn


@pytest.mark.parametrize("preset", ["masking-200k", "pipeline-200k", "window-32k"])
def test_build_session_turn_after_turn_extends_one_history_and_builds_what_a_fresh_builder_builds(
    tmp_path: Path, preset: str
) -> None:
    store = chain_counting_store(str(tmp_path / "t.db"))
    session = Session.create(store, tokenizers=["o200k_base"])
    msgs = synthetic_session(30, seed=5)
    for m in msgs[:21]:
        session.record(m)
    builder = load_preset(preset).builder()
    builder.build(session, record=False)
    loads = store.chains
    for k in range(21, len(msgs) - 1, 2):
        for m in msgs[k : k + 2]:
            session.record(m)
        got = builder.build(session, record=False)
        fresh = load_preset(preset).builder().build(History.from_session(session, "o200k_base"), session=session,
                                                    record=False)
        assert got.messages == fresh.messages and got.report.tokens_out == fresh.report.tokens_out
    # one History kept across the turns: no turn re-read the whole chain for the builder
    # (each fresh comparison above is one chain read of its own)
    assert store.chains == loads + (len(msgs) - 1 - 21 + 1) // 2


def test_build_session_reloads_after_a_rewind_or_another_handles_write(tmp_path: Path) -> None:
    store, session, ids = three_read_rounds(str(tmp_path / "r.db"))
    builder = load_preset("window-32k").builder()
    first = builder.build(session, record=False)
    assert len(first.messages) == 7 and store.chains == 1
    session.rewind(ids[1])  # back to the second call, then a different continuation
    session.record_tool_result("t1", "a different output", tool_name="read_file")
    got = builder.build(session, record=False)
    assert store.chains == 2  # the chain no longer passes through the head seen: reloaded
    assert got.messages == session.messages() and got.messages[-1].tool_results[0].text == "a different output"
    session.record(Message.assistant(ToolUseBlock("p1", "read_file", {}), ToolUseBlock("p2", "read_file", {})))
    session.record_tool_result("p1", "first half", tool_name="read_file")
    other = Session.open(SQLiteStore(str(tmp_path / "r.db")), session.id)  # another handle, same file
    other.record_tool_result("p2", "second half", tool_name="read_file")  # joins the message p1 opened
    got = builder.build(session, record=False)
    assert store.chains == 3 and got.messages == session.messages()
    assert [b.text for b in got.messages[-1].tool_results] == ["first half", "second half"]
