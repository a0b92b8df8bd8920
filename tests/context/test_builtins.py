"""Dump, window and masking on long sessions: cache stability, recall, reducers, presets, the CLI."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ctxmem.cli import cli
from ctxmem.config import available_presets, load_preset, parse_preset
from ctxmem.context import STRATEGIES, BuildRequest, History, check_output, make_strategy
from ctxmem.context.masking import RECALL_TOOL, RecallTool
from ctxmem.context.reducers import first_error, head_tail, summary_line
from ctxmem.errors import (
    ConfigError,
    ContextOverflowError,
    InputError,
    InvalidConversationError,
    UnknownNameError,
)
from ctxmem.jsonl import import_jsonl
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock, to_anthropic
from ctxmem.samples import synthetic_session
from ctxmem.store import SQLiteStore
from ctxmem.tokens import Budget

FACT = "hidden limit: SIMX shared memory is 101376 bytes"


@pytest.fixture(scope="module")
def long_session() -> list[Message]:
    msgs = synthetic_session(300, seed=5)
    # plant a fact in an early tool result (a sizeable one: tiny outputs are never masked)
    i = next(i for i in range(2, len(msgs), 2) if len(msgs[i].tool_results[0].text) > 1500)
    assert i < 20
    block = msgs[i].tool_results[0]
    msgs[i] = Message("user", (ToolResultBlock(block.tool_use_id, f"{block.text}\n{FACT}"), *msgs[i].content[1:]))
    return msgs


def _grow(strategy: Any, msgs: list[Message], tok: Any, budget: Budget, start: int) -> list[Any]:
    history = History.from_messages(msgs[:start], tok)
    outs = []
    for i in range(start, len(msgs), 2):
        history.extend(msgs[i : i + 2])
        outs.append(strategy.build(BuildRequest(history, budget)))
    return outs


@pytest.mark.parametrize("name", ["window", "masking"])
def test_prefix_is_byte_stable_between_compactions(name: str, long_session: list[Message], o200k: Any) -> None:
    strategy = make_strategy(name, {"compaction_step": 0.2})
    budget = Budget(60_000, 1_000, 0.9)
    outs = _grow(strategy, long_session, o200k, budget, start=301)
    compactions = 0
    for prev, cur in itertools.pairwise(outs):
        a = json.dumps(to_anthropic(prev.messages))
        b = json.dumps(to_anthropic(cur.messages))
        if cur.report.cache_invalidated:
            compactions += 1
            assert cur.report.invalidated_tokens > 0
        else:
            # only appended turns differ: the whole previous request is a prefix of this one
            assert b.startswith(a[:-1])
            assert cur.report.stable_prefix_tokens >= prev.report.tokens_out
    # compactions are rare: the boundary moves on the grid, not every turn
    assert 0 < compactions < len(outs) // 4


def test_masking_hands_out_recall_handles_that_return_the_original(long_session: list[Message], o200k: Any) -> None:
    history = History.from_messages(long_session, o200k)
    out = make_strategy("masking", {"reducer": "first_error"}).build(BuildRequest(history, Budget(60_000, 2_000, 0.9)))
    assert RECALL_TOOL in out.extra_tools and out.report.masked
    masked_msg = out.messages[out.report.masked[0] - out.report.kept[0] + 1]
    block = next(b for b in masked_msg.content if isinstance(b, ToolResultBlock))
    handle = block.tool_use_id
    assert f"handle {handle}" in block.text
    _, original = history.tool_result(handle)  # type: ignore[misc]
    recall = RecallTool(history)
    assert recall({"handle": handle}) == original.text
    lines = original.text.splitlines()
    assert recall({"handle": handle, "lines": "2-3"}) == f"2: {lines[1]}\n3: {lines[2]}"
    word = lines[0].split()[0]
    hits = recall({"handle": handle, "grep": word}).splitlines()
    assert hits and all(word in ln for ln in hits)
    assert len(hits) == sum(word in ln for ln in lines)
    with pytest.raises(InputError, match="handle"):
        recall({"handle": "nope"})
    with pytest.raises(InputError, match="lines"):
        recall({"handle": handle, "lines": "9-2"})


def test_recall_reads_from_the_store_when_the_history_is_gone(tmp_path: Path, long_session: list[Message]) -> None:
    with SQLiteStore(tmp_path / "s.db") as store:
        i = next(i for i, m in enumerate(long_session) if any(FACT in r.text for r in m.tool_results))
        handle = long_session[i].tool_results[0].tool_use_id
        data = "\n".join(json.dumps(m) for m in to_anthropic(long_session[: i + 1])).encode()
        session = import_jsonl(store, data)
        assert FACT in RecallTool(None, session)({"handle": handle})


def test_reducers_keep_the_gist() -> None:
    log = "[compile] target simx\nwarning: x\n  File \"kernel.py\", line 12\nNameError: name 'acc' is not defined"
    assert "NameError" in first_error(log) and "line 12" in first_error(log)
    assert first_error("all good\ndone").startswith("no error lines")
    table = "bench#4 (simulated)\nshape ref cand\na 1 2\ngeomean speedup: 3.41x"
    assert summary_line(table) == "bench#4 (simulated) … geomean speedup: 3.41x"
    assert head_tail("\n".join(str(i) for i in range(10))) == "0 | 1 | 2 | … 4 lines … | 7 | 8 | 9"


def test_a_placeholder_follows_the_config_it_is_built_under() -> None:
    # the policy of tools the config does not name is made once per config: a config put in
    # place afterwards (or a per-tool policy) must still decide the gist
    from ctxmem.context.masking import Masking, MaskingConfig, ToolPolicy

    log = "[compile] target simx\nwarning: x\nNameError: name 'acc' is not defined\n" + "\n".join(
        f"line {i}" for i in range(8))
    block = ToolResultBlock("toolu_1", log)
    m = Masking(MaskingConfig(reducer="head_tail"))
    assert "… 5 lines …" in m.placeholder(block, "compile")
    m.config = MaskingConfig(reducer="first_error")
    assert "first error (line 3 of 11)" in m.placeholder(block, "compile")
    assert "… 5 lines …" not in m.placeholder(block, "compile")
    m.config = MaskingConfig(reducer="first_error", tools={"compile": ToolPolicy(reducer="head_tail")})
    assert "… 5 lines …" in m.placeholder(block, "compile")
    assert "first error" in m.placeholder(block, "bench")  # a tool it does not name: the default
    m.config = MaskingConfig()
    assert m.placeholder(block, "compile").endswith("(recall it with the recall tool)]")  # no reducer: no gist


def test_dump_is_honest_about_overflow(long_session: list[Message], o200k: Any) -> None:
    history = History.from_messages(long_session, o200k)
    with pytest.raises(ContextOverflowError) as info:
        make_strategy("dump", {}).build(BuildRequest(history, Budget(20_000, 1_000)))
    assert info.value.needed > info.value.available == 19_000
    out = make_strategy("dump", {"on_overflow": "truncate"}).build(BuildRequest(history, Budget(20_000, 1_000)))
    check_output(out.messages)
    assert out.report.dropped and out.report.tokens_out <= 19_000


def test_budget_smaller_than_the_pinned_content_is_a_clear_error(o200k: Any) -> None:
    msgs = [Message.user("x " * 500), Message.assistant("ok"), Message.user("go")]
    history = History.from_messages(msgs, o200k)
    strategies = [(name, make_strategy(name, {})) for name in STRATEGIES.names()]
    strategies.append(("dump truncate", make_strategy("dump", {"on_overflow": "truncate"})))
    strategies += [(p, load_preset(p).strategy()) for p in available_presets()]
    for name, strategy in strategies:  # never a silent fallback to an empty or cut task
        with pytest.raises(ContextOverflowError, match="pinned content alone exceeds the budget") as err:
            strategy.build(BuildRequest(history, Budget(300, 10)))
        assert err.value.needed > err.value.available == 290, name


def test_history_ending_with_an_assistant_turn_is_refused(o200k: Any) -> None:
    msgs = [Message.user("task"), Message.assistant(ToolUseBlock("t1", "compile", {}))]
    with pytest.raises(InvalidConversationError, match=r"tool calls have no results \(t1\)"):
        make_strategy("window", {}).build(BuildRequest(History.from_messages(msgs, o200k), Budget(1000)))


def test_presets_name_the_file_and_field(tmp_path: Path) -> None:
    good = load_preset("masking-200k")
    assert good.type == "masking" and good.budget().context_window == 200_000
    with pytest.raises(ConfigError, match=re.escape("x.toml: field 'type': unknown strategy 'maskin'. Did you mean 'masking'")):
        parse_preset({"type": "maskin", "budget": {"context_window": 1000}}, name="x", source="x.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('type = "window"\n[budget]\ncontext_window = 1000\n[params]\nkeep_tokns = 5\n')
    with pytest.raises(ConfigError) as info:
        load_preset(bad)
    assert str(bad) in str(info.value) and "keep_tokns" in str(info.value)
    bad.write_text('type = "window"\n[budget]\ncontext_window = 1000\n[params]\ncompaction_step = 7\n')
    with pytest.raises(ConfigError, match="compaction_step"):
        load_preset(bad)
    bad.write_text('type = "window"\n[budget]\ncontext_window = -5\n')
    with pytest.raises(ConfigError, match=re.escape("budget.context_window")):
        load_preset(bad)
    bad.write_text('type = "masking"\n[budget]\ncontext_window = 1000\n[params]\nreducer = "first_eror"\n')
    with pytest.raises(ConfigError, match="first_error"):
        load_preset(bad)
    with pytest.raises(UnknownNameError, match="window-200k"):
        load_preset("window-200")


def test_context_build_reports_a_planted_fact_per_preset(tmp_path: Path, long_session: list[Message]) -> None:
    db = tmp_path / "s.db"
    with SQLiteStore(db) as store:
        data = "\n".join(json.dumps(m) for m in to_anthropic(long_session)).encode()
        sid = import_jsonl(store, data, tokenizers=["o200k_base"]).id
        n_events = store.event_count(sid)
    runner = CliRunner()
    planted = next(b.tool_use_id for m in long_session for b in m.tool_results if FACT in b.text)
    expected = {
        "dump-1m": "verbatim",  # the whole session fits
        "dump-truncate-200k": "absent",  # cut at a safe point
        "window-200k": "absent",
        "window-32k": "absent",
        "masking-200k": "verbatim",  # masked, but its head_tail gist keeps the last line
        # masked, but its line is salient: the facts section keeps it verbatim (with its handle)
        "masking-turns-128k": "verbatim",
        "pipeline-200k": "verbatim",  # retrieval brings the early output back
        "summarize-128k": "verbatim",  # the extractive summary drops it; the facts section keeps it
    }
    assert set(expected) == set(available_presets())
    for preset, status in expected.items():
        res = runner.invoke(
            cli,
            ["context", "build", "--session", sid, "--preset", preset, "--db", str(db), "--json", "--probe", FACT,
             "--no-messages"],
        )
        assert res.exit_code == 0, res.output
        report = json.loads(res.output)
        assert report["probes"][FACT] == status, preset
        assert report["report"]["tokens_out"] <= report["report"]["available"]
    # the facts section names where the line came from: the recall handle of its tool output
    res = runner.invoke(cli, ["context", "build", "--session", sid, "--preset", "masking-turns-128k", "--db", str(db), "--json"])
    assert res.exit_code == 0 and f"recall {planted}] {FACT}" in res.output
    res = runner.invoke(cli, ["context", "build", "--session", sid, "--preset", "nope", "--db", str(db)])
    assert res.exit_code == 1 and "unknown preset" in res.output
    with SQLiteStore(db) as store:  # a dry run: eight compacting builds wrote nothing
        assert store.event_count(sid) == n_events


def test_strategies_list_shows_types_and_presets() -> None:
    res = CliRunner().invoke(cli, ["strategies", "list", "--json"])
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert {"dump", "window", "masking"} <= {t["type"] for t in data["types"]}
    assert "masking-200k" in {p["name"] for p in data["presets"]}


def test_every_preset_file_is_listed_in_the_strategies_index() -> None:
    folder = Path(__file__).resolve().parents[2] / "strategies"
    index = (folder / "README.md").read_text()
    for f in sorted(folder.glob("*.toml")):
        assert f"({f.name})" in index, f"{f.name} is missing from strategies/README.md"
        load_preset(f)


def test_probe_reads_texts_not_their_repr(o200k: Any) -> None:
    from ctxmem.context.builtins import Dump
    from ctxmem.context.probe import probe_status

    needle = 'error: "smem" over limit\n  at line 42'  # quotes and a newline, as tool output has
    msgs = [Message.user("go"), Message.assistant("x", ToolUseBlock("t1", "compile", {})),
            Message("user", (ToolResultBlock("t1", f"log\n{needle}\nend"),))]
    history = History.from_messages(msgs, o200k)
    built = Dump().build(BuildRequest(history, Budget(10_000, reserve_output=100)))
    assert probe_status(needle, built, history) == "verbatim"
    assert probe_status('error: "smem" over limit at line 42', built, history) == "normalized"
    assert probe_status("not in there", built, history) == "absent"


def test_a_strategy_reused_across_histories_never_serves_a_dead_historys_state(o200k: Any) -> None:
    """Per-history caches are keyed by History.uid, which (unlike id()) is never reused after
    a History is garbage-collected: a new history that lands at the old address still gets
    builds equal to a fresh instance's."""
    import gc

    sessions = [synthetic_session(40, seed=s) for s in (1, 2, 3)]
    budget = Budget(6_000, 500)
    for name in ("masking", "window", "pipeline", "summarization"):
        reused = make_strategy(name, {})
        uids = set()
        for msgs in sessions:
            h = History.from_messages(msgs, o200k)
            uids.add(h.uid)
            got = reused.build(BuildRequest(h, budget))
            want = make_strategy(name, {}).build(BuildRequest(h, budget))
            assert list(got.messages) == list(want.messages), name
            del h
            gc.collect()
        assert len(uids) == len(sessions)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.data())
def test_masking_cut_positions_view_equals_the_spliced_list(sizes: list[int], data: Any) -> None:
    """Masking's truncation reads output positions through a view (masked prefix sums up to
    the boundary, full ones after, shifted): every index, slice and bisection must equal the
    list it replaced, which copied the whole history's prefix sums per turn."""
    from bisect import bisect_left

    from ctxmem.context.masking import _Spliced

    masked = [min(s, data.draw(st.integers(0, s))) for s in sizes]
    full_cum, min_cum = [0], [0]
    for s, m in zip(sizes, masked, strict=True):
        full_cum.append(full_cum[-1] + s)
        min_cum.append(min_cum[-1] + m)
    b = data.draw(st.integers(0, len(sizes)))
    shift = min_cum[b] - full_cum[b]
    expected = [*min_cum[: b + 1], *(c + shift for c in full_cum[b + 1 :])]
    view = _Spliced(min_cum, full_cum, b)
    assert len(view) == len(expected)
    assert [view[i] for i in range(len(view))] == expected
    assert view[-1] == expected[-1] and view[1:] == expected[1:]
    for x in range(-1, expected[-1] + 2):
        lo = data.draw(st.integers(0, len(expected)))
        assert bisect_left(view, x, lo=lo) == bisect_left(expected, x, lo=lo)


def test_masking_grown_turn_by_turn_equals_a_fresh_instance_as_its_cut_moves(long_session: list[Message], o200k: Any) -> None:
    # The kept region is extended turn by turn; when the truncation point moves forward and
    # the mask boundary does not, it is cut down (a slice) rather than rebuilt. Every turn
    # must give exactly what a fresh instance gives for the same history.
    budget = Budget(24_000, 2_000, 0.9)
    params = {"keep_last": 3, "on_overflow": "truncate", "compaction_step": 0.05, "facts_tokens": 0}
    grown = make_strategy("masking", **params)
    history = History.from_messages(long_session[:41], o200k)
    cuts = []
    for i in range(41, len(long_session) - 1, 2):
        history.extend(long_session[i : i + 2])
        request = BuildRequest(history, budget, pinned=1)
        out = grown.build(request)
        fresh = make_strategy("masking", **params).build(request)
        assert list(out.messages) == list(fresh.messages)
        assert out.report.tokens_out == fresh.report.tokens_out
        assert tuple(out.report.masked) == tuple(fresh.report.masked)
        assert out.report.sections == fresh.report.sections
        cuts.append((out.report.dropped.stop, min(out.report.masked, default=-1)))
    moves = sum(1 for a, b in itertools.pairwise(cuts) if b[0] > a[0])
    assert moves >= 3, cuts  # the cut did move, several times


def test_masking_masks_the_newest_outputs_when_they_alone_overflow() -> None:
    """The agent just read a log bigger than the window: masking dropped the whole history,
    the call included (only the task was left), so the model would run the tool again.
    Now the newest outputs are masked too: the calls stay, with a gist and a handle."""
    from ctxmem.config import load_preset
    from ctxmem.messages import validate_conversation
    from ctxmem.session import Session
    from ctxmem.store import MemoryStore

    s = Session.create(MemoryStore(), tokenizers=["o200k_base"])
    s.record(Message.user("task: find the error"))
    for i in range(3):
        s.record(Message.assistant(f"step {i}", ToolUseBlock(f"t{i}", "read_log", {"i": i})))
        lines = 20 if i < 2 else 5000
        s.record_tool_result(f"t{i}", "".join(f"line {j}: INFO ok\n" for j in range(lines)) + "ERROR: disk full at sector 77\n",
                             tool_name="read_log")
    for name in ("masking-200k", "pipeline-200k", "masking-turns-128k"):
        builder = load_preset(name).builder(context_window=8000)
        built = builder.build(s, record=False)
        validate_conversation(list(built.messages), allow_pending=True)
        assert built.report.tokens_out <= builder.budget.available
        uses = [b.id for m in built.messages for b in m.content if isinstance(b, ToolUseBlock)]
        assert uses == ["t0", "t1", "t2"], name  # every call kept, with its (masked) result
        last = built.messages[-1].content[0]
        assert isinstance(last, ToolResultBlock) and "handle t2" in last.text
        if name != "masking-turns-128k":  # its placeholders carry the handle only (no reducer)
            assert "ERROR: disk full" in last.text  # head_tail's gist
        assert any("alone exceed the budget: masked them too" in n for n in built.report.notes)
    # a window it fits in keeps the newest outputs verbatim, as keep_last says
    built = load_preset("masking-200k").builder(context_window=200_000).build(s, record=False)
    assert "line 4998: INFO ok" in built.messages[-1].content[0].text  # type: ignore[union-attr]
