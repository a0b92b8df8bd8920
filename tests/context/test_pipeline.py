"""The pipeline: a core strategy plus ledger, retrieved outputs and restated facts at the tail.

Real tokenizer (o200k), real BM25/hybrid retrieval, synthetic kernel sessions with a fact
planted in an early tool output.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from typing import Any

import pytest

from ctxmem.config import parse_preset
from ctxmem.context import BuildRequest, History, check_output, make_strategy
from ctxmem.errors import ConfigError
from ctxmem.messages import (
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
    message_texts,
    to_anthropic,
)
from ctxmem.samples import synthetic_session
from ctxmem.tokens import Budget
from ctxmem.tokens.counting import DEFAULT_OVERHEAD

FACT = "zorblax quota: SIMX shared memory is 101376 bytes per block"
PINNED_FACTS = ("keep atol 2e-3", "never edit reference.py")
LEDGER_HEAD = "Task ledger"
RETRIEVED_HEAD = "Earlier tool outputs retrieved for the task and the latest request"


@pytest.fixture(scope="module")
def session() -> list[Message]:
    msgs = synthetic_session(160, seed=5)
    i = next(i for i in range(2, len(msgs), 2) if len(msgs[i].tool_results[0].text) > 1500)
    block = msgs[i].tool_results[0]
    msgs[i] = Message("user", (ToolResultBlock(block.tool_use_id, f"{block.text}\n{FACT}"), *msgs[i].content[1:]))
    # the agent's current step asks about the planted fact (the retrieval query)
    msgs += [
        Message.assistant("What was the zorblax quota for shared memory?", ToolUseBlock("toolu_q", "bash", {"cmd": "zorblax"})),
        Message.user(ToolResultBlock("toolu_q", "command not found: zorblax")),
    ]
    return msgs


def _planted_handle(msgs: list[Message]) -> str:
    i = next(i for i, m in enumerate(msgs) if any(FACT in r.text for r in m.tool_results))
    return msgs[i].tool_results[0].tool_use_id


def _tail(out: Any) -> list[str]:
    return [b.text for b in out.messages[-1].content if isinstance(b, TextBlock)]


def _build(params: dict[str, Any], msgs: list[Message], tok: Any, budget: Budget, **kw: Any) -> Any:
    req = BuildRequest(History.from_messages(msgs, tok), budget, pinned_facts=PINNED_FACTS, **kw)
    return make_strategy("pipeline", params).build(req)


@pytest.mark.parametrize("core", ["window", "masking"])
def test_retrieves_a_planted_early_fact_the_core_left_out(core: str, session: list[Message], o200k: Any) -> None:
    budget = Budget(30_000, 1_000, 0.9)
    history = History.from_messages(session, o200k)
    alone = make_strategy(core, {}).build(BuildRequest(history, budget, pinned_facts=PINNED_FACTS))
    rendered = json.dumps(to_anthropic(alone.messages))
    assert "SIMX shared memory is 101376" not in rendered  # the core alone lost it (dropped or masked)
    out = make_strategy("pipeline", {"core": core}).build(BuildRequest(history, budget, pinned_facts=PINNED_FACTS))
    check_output(out.messages)
    retrieved = next(t for t in _tail(out) if t.startswith(RETRIEVED_HEAD))
    assert FACT in retrieved and f"handle {_planted_handle(session)}" in retrieved
    assert out.report.retrieved_event_ids and out.report.sections["retrieved"] > 0


@pytest.mark.parametrize("core", ["window", "masking", "summarization"])
def test_tail_sections_ledger_facts_and_caps(core: str, session: list[Message], o200k: Any) -> None:
    for window in (3_000, 8_000, 60_000):
        budget = Budget(window, 200, 0.9)
        params = {"core": core, "ledger_tokens": 400, "retrieval_tokens": 1200, "tail_fraction": 0.2}
        out = _build(params, session, o200k, budget)
        check_output(out.messages)
        s = out.report.sections
        assert out.report.tokens_out <= budget.available
        # hierarchical budget: the tail's caps scale down to tail_fraction of the budget
        scale = min(1.0, int(budget.available * 0.2) / 1600)
        per_block = DEFAULT_OVERHEAD.per_block
        assert s.get("ledger", 0) <= int(400 * scale) + per_block
        assert s.get("retrieved", 0) <= int(1200 * scale) + per_block
        tail = _tail(out)
        assert tail[-1] == "Keep in mind: " + " · ".join(PINNED_FACTS)  # facts restated last, verbatim
        assert s["facts_restated"] == o200k.count(tail[-1]) + per_block
        assert any(t.startswith(LEDGER_HEAD) for t in tail), "ledger missing"
        ledger = next(t for t in tail if t.startswith(LEDGER_HEAD))
        assert s["ledger"] == o200k.count(ledger) + per_block
        assert f"last bash (message {len(session) - 1}): command not found: zorblax" in ledger
        # pinned facts also stay at the head, on the pinned task
        assert all(TextBlock(f) in out.messages[0].content for f in PINNED_FACTS)


def test_retrieval_never_repeats_outputs_still_verbatim(session: list[Message], o200k: Any) -> None:
    history = History.from_messages(session, o200k)
    strategy = make_strategy("pipeline", {"core": "masking", "retrieval_k": 5})
    for window in (20_000, 40_000, 80_000):
        out = strategy.build(BuildRequest(history, Budget(window, 500, 0.9)))
        verbatim = {
            b.tool_use_id
            for m in out.messages[:-1]
            for b in m.content
            if isinstance(b, ToolResultBlock) and not b.text.startswith("[masked")
        } | {r.tool_use_id for r in out.messages[-1].tool_results if not r.text.startswith("[masked")}
        tail = _tail(out)
        retrieved = next((t for t in tail if t.startswith(RETRIEVED_HEAD)), "")
        handles = set(re.findall(r"handle (toolu_\w+)\]", retrieved))
        assert handles, f"nothing retrieved at {window}"
        assert handles.isdisjoint(verbatim)


def test_prefix_is_byte_identical_between_builds_and_breakpoints_skip_the_tail(
    session: list[Message], o200k: Any
) -> None:
    strategy = make_strategy("pipeline", {"core": "masking", "core_params": {"compaction_step": 0.2}})
    budget = Budget(40_000, 1_000, 0.9)
    history = History.from_messages(session[:101], o200k)
    outs = []
    for i in range(101, len(session), 2):
        history.extend(session[i : i + 2])
        outs.append(strategy.build(BuildRequest(history, budget, pinned_facts=PINNED_FACTS)))
    stable = 0
    for prev, cur in itertools.pairwise(outs):
        last = len(cur.messages) - 1
        assert last not in cur.cache_breakpoints and last - 1 in cur.cache_breakpoints
        if not cur.report.cache_invalidated:
            stable += 1
            # everything but the tail-carrying last message is byte-identical, then appended turns
            a = json.dumps(to_anthropic(prev.messages[:-1]))
            b = json.dumps(to_anthropic(cur.messages))
            assert b.startswith(a[:-1])
            assert cur.report.stable_prefix_tokens >= prev.report.tokens_out - prev.report.sections.get("ledger", 0) - (
                prev.report.sections.get("retrieved", 0) + prev.report.sections.get("facts_restated", 0)
            ) - 200
    assert stable >= len(outs) // 2


@pytest.mark.parametrize("name", ["window", "masking"])
def test_window_and_masking_mark_breakpoints(name: str, session: list[Message], o200k: Any) -> None:
    history = History.from_messages(session, o200k)
    out = make_strategy(name, {}).build(BuildRequest(history, Budget(30_000, 1_000, 0.9), pinned=1))
    bps = out.cache_breakpoints
    assert 0 in bps and len(out.messages) - 1 in bps and len(bps) <= 3
    if name == "masking":
        assert out.report.masked
        end = max(i for i, m in enumerate(out.messages) if any(r.text.startswith("[masked") for r in m.tool_results))
        assert end in bps  # the end of the compacted prefix


def test_embedder_is_configurable(session: list[Message], o200k: Any) -> None:
    from ctxmem.retrieval import minilm_available

    out_budget = Budget(30_000, 1_000, 0.9)
    history = History.from_messages(session, o200k)
    p = make_strategy("pipeline", {"retriever": "hybrid", "embedder": "hashing"})
    p.build(BuildRequest(history, out_budget))
    (retriever, _), = p._retrievers.values()
    assert retriever.describe()["embedder"].startswith("hashing")
    with pytest.raises(ConfigError, match="embedder"):
        make_strategy("pipeline", {"embedder": "bert"})
    if not minilm_available():
        pytest.skip("MiniLM packages are not installed")
    m = make_strategy("pipeline", {"retriever": "hybrid", "embedder": "minilm"})
    out = m.build(BuildRequest(history, out_budget))
    (retriever, _), = m._retrievers.values()
    assert "minilm" in retriever.describe()["embedder"].lower()
    assert FACT in next(t for t in _tail(out) if t.startswith(RETRIEVED_HEAD))


def test_core_params_errors_name_the_file_and_the_field_once() -> None:
    data = {"type": "pipeline", "budget": {"context_window": 1000}, "params": {"core_params": {"keep_lst": 3}}}
    with pytest.raises(ConfigError) as info:
        parse_preset(data, name="p", source="presets/p.toml")
    msg = str(info.value)
    assert msg == "presets/p.toml: field 'params.core_params.keep_lst': unknown field; remove it or check its spelling"
    assert msg.count("field") == 2  # "field '…'" once, and "unknown field"
    data["params"] = {"core_params": {"reducer": "first_eror"}}
    with pytest.raises(ConfigError, match=re.escape("presets/p.toml: field 'params.core_params.reducer': unknown reducer 'first_eror'")):
        parse_preset(data, name="p", source="presets/p.toml")
    with pytest.raises(ConfigError, match=re.escape("x.toml: field 'core_params.keep_last'")):
        make_strategy("pipeline", {"core_params": {"keep_last": -1}}, source="x.toml")


@pytest.mark.parametrize(
    ("name", "params"), [("window", {}), ("dump", {"on_overflow": "truncate"}), ("masking", {"keep_last": 2})]
)
def test_boundary_moves_are_recorded_as_compactions(
    name: str, params: dict[str, Any], session: list[Message], o200k: Any, tmp_path: Any
) -> None:
    from ctxmem.events import CompactionEvent
    from ctxmem.jsonl import import_jsonl
    from ctxmem.session import Session
    from ctxmem.store import SQLiteStore

    with SQLiteStore(tmp_path / "s.db") as store:
        data = "\n".join(json.dumps(m) for m in to_anthropic(session)).encode()
        sess = Session.open(store, import_jsonl(store, data, tokenizers=["o200k_base"]).id)
        full = History.from_session(sess, "o200k_base")
        budget = Budget(30_000, 1_000, 0.9)
        strategy = make_strategy(name, {**params, "compaction_step": 0.2})
        start = 121
        history = History.from_messages(full.messages[:start], o200k, event_ids=full.event_ids[:start])
        outs = []
        for i in range(start, len(full), 2):
            history.extend(full.messages[i : i + 2], event_ids=full.event_ids[i : i + 2])
            outs.append(strategy.build(BuildRequest(history, budget, session=sess)))
        # boundary moves: the first build that compacts, then every build that rewrote the prefix
        moves = int(bool(outs[0].report.dropped or outs[0].report.masked)) + sum(
            o.report.cache_invalidated for o in outs[1:]
        )
        events = [se.event for se in sess.events() if isinstance(se.event, CompactionEvent)]
        assert events and all(e.strategy == name for e in events)
        assert 0 < len(events) <= moves and len(events) < len(outs) // 2  # on boundary moves, not every turn
        final = outs[-1].report
        gone = {e for i in (*final.dropped, *final.masked) for e in history.event_ids[i]}
        assert set(events[-1].source_event_ids) <= gone
        # each event lists only what it adds to the one it extends; the chain gives the full set
        from ctxmem.context import compaction_sources

        stored = [se for se in sess.events() if isinstance(se.event, CompactionEvent)]
        assert set(compaction_sources(sess.events(), stored[-1].id)) == gone
        extending = [se for se in stored if "(extends compaction" in (se.event.reason or "")]
        assert extending or len(stored) == 1
        for se in extending:  # a boundary that only moved forward lists only what it added
            assert len(se.event.source_event_ids) < len(compaction_sources(sess.events(), se.id))
        assert events[-1].tokens_before > events[-1].tokens_after
        # a fresh instance rebuilding the same state records nothing new
        make_strategy(name, {**params, "compaction_step": 0.2}).build(BuildRequest(history, budget, session=sess))
        assert len([se for se in sess.events() if isinstance(se.event, CompactionEvent)]) == len(events)


def test_id_ranges_round_trip() -> None:
    from ctxmem.context._assembly import id_ranges, parse_id_ranges

    rng = random.Random(3)
    for _ in range(200):
        ids = rng.sample(range(1, 400), rng.randint(1, 120))
        text = id_ranges(ids)
        assert parse_id_ranges(text) == sorted(ids)
        assert len(text.split(",")) <= len(ids)
    assert id_ranges([5, 1, 2, 3, 9, 9]) == "1-3,5,9"


def test_planted_fact_status_for_every_preset(session: list[Message], o200k: Any) -> None:
    """Every shipped preset, at a budget that forces compaction, reports where the fact is."""
    from ctxmem.config import available_presets, load_preset
    from ctxmem.context.probe import probe_status

    history = History.from_messages(session, o200k)
    handle = _planted_handle(session)
    expected = {
        "dump-1m": "verbatim",  # the whole history fits 1M
        "dump-truncate-200k": "absent",  # dropped at a safe cut
        "window-200k": "absent",
        "window-32k": "absent",
        # masked, but its head_tail gist keeps the output's last line, where the fact is
        "masking-200k": "verbatim",
        # handle-only placeholders, but the line is salient: the facts section keeps it
        "masking-turns-128k": "verbatim",
        "pipeline-200k": "verbatim",  # masked by the core, kept by its facts section and retrieval
        "summarize-128k": "verbatim",  # the extractive summary drops this line; the facts section keeps it
    }
    assert set(expected) == set(available_presets())
    for name, status in expected.items():
        preset = load_preset(name)
        window = 1_000_000 if name == "dump-1m" else 60_000
        out = preset.strategy().build(BuildRequest(history, preset.budget(window), pinned=preset.model.pinned))
        assert probe_status(FACT, out, history) == status, name
        assert out.report.tokens_out <= out.report.available
        if name in ("masking-turns-128k", "summarize-128k"):
            # provenance: the fact's line names the handle of the output it came from
            text = "\n".join(t for m in out.messages for t in message_texts(m))
            assert f"recall {handle}] {FACT}" in text, name


def test_retrieval_queries_with_the_users_latest_request_and_states_provenance(o200k: Any) -> None:
    """The last assistant turn says nothing about it; the user's request does: retrieval finds it."""
    msgs: list[Message] = [Message.user("Tidy the data pipeline and keep the numbers reproducible.")]
    for i in range(60):
        out = "\n".join(f"row {i}-{k}: load ok, {k * 7} records" for k in range(40))
        if i == 3:
            out += "\nquarantine bucket for malformed invoices: s3://acme-quarantine/invoices-2026"
        msgs.append(Message.assistant(ToolUseBlock(f"t{i}", "run_step", {"step": i})))
        msgs.append(Message("user", (ToolResultBlock(f"t{i}", out),)))
    msgs.append(Message.assistant("Step 59 finished."))
    msgs.append(Message.user("Where do malformed invoices go? The quarantine bucket, please."))
    h = History.from_messages(msgs, o200k)
    out = make_strategy("pipeline", {"core": "window"}).build(BuildRequest(h, Budget(6_000, 500, 0.9)))
    check_output(out.messages)
    retrieved = next(t for t in _tail(out) if t.startswith(RETRIEVED_HEAD))
    line = next(ln for ln in retrieved.splitlines() if "s3://acme-quarantine/invoices-2026" in ln)
    found = h.tool_result("t3")
    assert found is not None
    assert line.startswith(f"- [run_step · event {out.report.retrieved_event_ids[0]}") or "t3" in line
    assert f"message {found[0]} · handle t3]" in line


def test_the_tool_lists_count_follows_the_tools_whatever_tuple_carries_them(session: list[Message], o200k: Any) -> None:
    # A tool list's count is cached by the tuple's identity (its hash serializes every
    # schema): alternating tool lists, and an equal list in another tuple, must each get the
    # count of their own tools, as an independent recount gives it.
    from ctxmem.context.masking import RECALL_TOOL
    from ctxmem.messages import ToolSpec, tool_to_anthropic
    from ctxmem.tokens import count_tools

    small = (ToolSpec("read_file", "Read a file", {"type": "object", "properties": {"path": {"type": "string"}}}),)
    big = (*small, ToolSpec("run", "Run a command " * 40, {"type": "object", "properties": {"cmd": {"type": "string"}}}))
    same = tuple(ToolSpec(t.name, t.description, dict(t.input_schema)) for t in big)
    history = History.from_messages(session[:41], o200k)
    strategy = make_strategy("pipeline", core="masking")
    for tools in (small, big, small, same, big, ()):
        request = BuildRequest(history, Budget(200_000, 8_000), tools=tools)
        want = DEFAULT_OVERHEAD.per_request + (count_tools([tool_to_anthropic(t) for t in tools], o200k).total if tools else 0)
        assert request.fixed_tokens == want
        built = strategy.build(request)
        offered = [tool_to_anthropic(t) for t in (*tools, RECALL_TOOL)]  # the pipeline budgets its recall tool too
        assert built.report.sections["system_and_tools"] == DEFAULT_OVERHEAD.per_request + count_tools(offered, o200k).total


@pytest.mark.parametrize("core", ["window", "masking"])
def test_after_the_final_answer_the_next_input_gets_the_whole_pipeline(
    core: str, session: list[Message], o200k: Any
) -> None:
    """With expect_input and a history ending with the model's final answer, the pipeline
    returned its bare core: strategy 'masking' under the pipeline's shrunk inner budget (190,398
    of 192,000), no ledger, no retrieval, no restated facts."""
    from ctxmem.messages import tool_to_anthropic
    from ctxmem.tokens import count_request

    answered = [*session, Message.assistant("The quota is 101376 bytes; done.")]
    for window in (8_000, 60_000):
        budget = Budget(window, 200, 0.9)
        params = {"core": core, "ledger_tokens": 400, "retrieval_tokens": 1200, "tail_fraction": 0.2}
        out = _build(params, answered, o200k, budget, expect_input=True)
        r = out.report
        assert r.strategy == "pipeline" and r.available == budget.available
        assert {"ledger", "facts_restated"} <= set(r.sections)
        msgs = list(out.messages)
        assert msgs[-1] == answered[-1]  # the answer stays last, verbatim; the next input follows it
        carrier = msgs[-2]
        assert carrier.role == "user"
        texts = [b.text for b in carrier.content if isinstance(b, TextBlock)]
        assert texts[-1] == "Keep in mind: " + " · ".join(PINNED_FACTS)
        assert any(t.startswith(LEDGER_HEAD) for t in texts)
        # what is sent next: this context plus the user's input, valid and within the budget
        check_output([*msgs, Message.user("thanks, now tune BLOCK_N")])
        tools = [tool_to_anthropic(t) for t in (*out.tools, *out.extra_tools)]
        assert r.tokens_out == count_request(msgs, o200k, system=out.system, tools=tools).total <= budget.available
        # cache breakpoints stop before the rewritten message
        assert all(b < len(msgs) - 2 for b in out.cache_breakpoints)
