"""The task ledger: built from tool events, incremental, rendered within an exact cap."""

from __future__ import annotations

from typing import Any

from ctxmem.context import History
from ctxmem.context.ledger import LedgerBuilder, build_ledger, render_ledger
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.samples import synthetic_session
from ctxmem.workloads.kernel.fact_profile import PROFILE as KERNEL


def _oor(required: int) -> str:
    return (
        f"[compile] ok\ntriton.runtime.errors.OutOfResources: out of resource: shared memory, Required: {required}, "
        "Hardware limit: 101376. Reduce num_stages."
    )


def _turn(i: int, tool: str, inp: dict[str, Any], out: str, err: bool = False) -> list[Message]:
    tid = f"t{i}"
    return [
        Message.assistant(ToolUseBlock(tid, tool, inp)),
        Message("user", (ToolResultBlock(tid, out, is_error=err),)),
    ]


def _history() -> list[Message]:
    msgs = [Message.user("Optimize kernel.py.")]
    msgs += _turn(1, "compile", {"path": "kernel.py"}, _oor(204800), err=True)
    msgs += _turn(2, "edit_file", {"path": "kernel.py", "old": "a", "new": "b"}, "edited kernel.py: replaced 3 lines")
    msgs += _turn(3, "compile", {"path": "kernel.py"}, _oor(286720), err=True)
    msgs += _turn(4, "benchmark", {"target": "bench.py"}, "bench#7 (sim)\nrow 1.0 0.5 2.00x\ngeomean speedup: 3.41x")
    msgs += _turn(5, "check", {}, "eval#12 correctness\nall 24 cases PASS")
    msgs += _turn(6, "benchmark", {"target": "bench.py"}, "bench#9 (sim)\ngeomean speedup: 2.10x")
    msgs += _turn(7, "compile", {"path": "kernel.py"}, "[compile] compiled in 1.2s: 0 spills")
    return msgs


def test_ledger_counts_errors_files_ids_best_and_status() -> None:
    led = build_ledger(_history(), KERNEL)
    assert led.tool_calls == {"compile": 3, "edit_file": 1, "benchmark": 2, "check": 1}
    [err] = led.errors  # numbers normalized: one signature
    assert err.count == 2 and (err.first, err.last) == (2, 6) and err.tool == "compile"
    assert "Required: 286720" in err.example and "Hardware limit: 101376" in err.example
    assert led.files[:2] == ("kernel.py", "bench.py")
    assert led.run_ids == ("bench#7", "eval#12", "bench#9")
    assert led.best is not None and led.best.raw == "3.41x" and led.best.run_id == "bench#7"
    assert led.best.message_index == 8
    assert led.last_status["compile"][0].startswith("no error") or "compiled" in led.last_status["compile"][0]
    assert led.last_status["benchmark"] == ("bench#9 (sim) … geomean speedup: 2.10x", 12)


def test_incremental_updates_equal_a_rebuild(o200k: Any) -> None:
    msgs = synthetic_session(40, seed=4)
    h = History.from_messages(msgs[:11], o200k)
    builder = LedgerBuilder()
    for k in range(11, len(msgs) + 1, 7):
        h.extend(msgs[len(h) : k])
        assert builder.update(h) == build_ledger(msgs[:k])
    assert builder.update(msgs[:5]) == build_ledger(msgs[:5])  # another source starts over


def test_each_appended_message_gives_the_ledger_of_a_rebuild() -> None:
    # The snapshot shares the tuples of parts that did not change (errors, files, run ids,
    # candidates): a recurring error (count 1 -> 2, new wording), a new file, a new run id or
    # candidate must each show in the very next snapshot, never a stale one.
    msgs = _history()
    builder = LedgerBuilder(KERNEL)
    grown: list[Message] = []
    for k, m in enumerate(msgs, start=1):
        grown.append(m)
        assert builder.update(grown) == build_ledger(msgs[:k], KERNEL)
    assert [e.count for e in builder.ledger().errors] == [2]
    before = builder.ledger()
    assert builder.update(grown).errors is before.errors  # nothing new: shared, not copied


def test_render_fits_the_cap_exactly_and_keeps_the_best_first(o200k: Any) -> None:
    led = build_ledger(synthetic_session(150, seed=1), KERNEL)
    for cap in (40, 120, 400, 2000):
        text = render_ledger(led, o200k, cap)
        assert o200k.count(text) <= cap
        assert render_ledger(led, o200k, cap) == text
    text = render_ledger(led, o200k, 120)
    assert text.splitlines()[1].startswith("best geomean speedup so far:")
    big = render_ledger(led, o200k, 2000)
    assert "calls: " in big and "files: " in big and "runs: " in big and "last compile" in big


def test_errors_come_from_tool_outputs_never_from_file_contents() -> None:
    source = 'def launch(cfg):\n    if cfg.bad:\n        raise ValueError("bad config")\nclass MyError(Exception): pass'
    msgs = [Message.user("Optimize kernel.py.")]
    msgs += _turn(1, "read_file", {"path": "kernel.py"}, source)
    led = build_ledger(msgs)
    assert led.errors == () and led.last_status["read_file"] == ("read 4 lines", 2)


def test_a_traceback_keeps_the_printed_error_with_its_limit_numbers_verbatim() -> None:
    tb = "\n".join([
        "Traceback (most recent call last):",
        '  File "kernel.py", line 88, in launch',
        "    _fwd[grid](q, k, v, BLOCK_M=128)",
        '  File "triton/compiler/compiler.py", in _init_handles',
        '    raise OutOfResources(self.metadata.shared, max_shared, "shared memory")',
        "triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: 229376, "
        "Hardware limit: 101376. Reducing block sizes or `num_stages` may help.",
    ])
    msgs = [Message.user("Optimize kernel.py."), *_turn(1, "benchmark", {"path": "kernel.py"}, tb, err=True)]
    [err] = build_ledger(msgs).errors
    assert "Required: 229376" in err.example and "Hardware limit: 101376" in err.example
    assert "self.metadata" not in err.example


def _bench(n: int, sha: str, cfg: str, geo: str | None, passed: bool = True) -> str:
    head = f"bench#{n} · kernel.py (sha {sha}) · {cfg}"
    if geo is None:
        return head + "\nerror: invalid launch config for SIMX-1: BLOCK_N=48 is not a power of two"
    verdict = f"eval#{n + 100} PASSED" if passed else f"eval#{n + 100} FAILED"
    return (f"{head}\ndevice: SIMX-1 · simulated\ncorrectness: {verdict} (this source and config, dev suite)\n\n"
            f"shape batch heads\ns1 1 8/8 12.0 6.0 2.00x\n\ngeomean speedup {geo}x over the reference · simulated")


def test_the_kernel_profile_gives_a_candidate_table_with_the_best_so_far(o200k: Any) -> None:
    msgs = [Message.user("Optimize kernel.py.")]
    msgs += _turn(1, "benchmark", {"path": "kernel.py"}, _bench(1, "aaaa1111", "BLOCK_M=64 BLOCK_N=32", "1.20"))
    msgs += _turn(2, "benchmark", {"path": "kernel.py"}, _bench(2, "bbbb2222", "BLOCK_M=128 BLOCK_N=64", "2.75"))
    msgs += _turn(3, "benchmark", {"path": "kernel.py"}, _bench(3, "cccc3333", "BLOCK_M=64 BLOCK_N=48", None), err=True)
    msgs += _turn(4, "benchmark", {"path": "kernel.py"}, _bench(4, "dddd4444", "BLOCK_M=32 BLOCK_N=32", "3.10", False))
    led = build_ledger(msgs, KERNEL)
    assert [(c.config, c.design, c.score) for c in led.candidates] == [
        ("BLOCK_M=64 BLOCK_N=32", "kernel.py@aaaa1111", 1.2),
        ("BLOCK_M=128 BLOCK_N=64", "kernel.py@bbbb2222", 2.75),
        ("BLOCK_M=64 BLOCK_N=48", "kernel.py@cccc3333", None),
        ("BLOCK_M=32 BLOCK_N=32", "kernel.py@dddd4444", 3.1),
    ]
    assert led.candidates[1].result == "PASSED eval#102" and led.candidates[3].result == "FAILED eval#104"
    assert "not a power of two" in led.candidates[2].result
    text = render_ledger(led, o200k, 400)
    assert "best geomean speedup so far: 3.10x (bench#4" in text
    assert "BLOCK_M=128 BLOCK_N=64 · kernel.py@bbbb2222 · PASSED eval#102 · 2.75 (bench#2" in text
    assert build_ledger(msgs).candidates == ()  # the generic profile knows no candidates


def test_the_builders_ranking_of_candidates_is_a_full_sort_and_renders_the_same(o200k: Any) -> None:
    # The builder keeps the scored candidates sorted as they arrive (so a turn's render does
    # not sort them all); ties in score go to the earlier message, unscored ones are left out.
    import dataclasses

    geos = ["1.20", "2.75", None, "2.75", "0.90", "3.10", "2.75", None, "1.20"]
    msgs = [Message.user("Optimize kernel.py.")]
    lb = LedgerBuilder(KERNEL)
    for n, geo in enumerate(geos, 1):
        msgs += _turn(n, "benchmark", {"path": "kernel.py"}, _bench(n, f"{n:04d}abcd", f"BLOCK_M={16 * n}", geo),
                      err=geo is None)
        led = lb.update(msgs)
        full = sorted((c for c in led.candidates if c.score is not None), key=lambda c: (-(c.score or 0), c.message_index))
        assert led.ranked == tuple(full)
        assert render_ledger(led, o200k, 600) == render_ledger(dataclasses.replace(led, ranked=None), o200k, 600)
    assert [c.score for c in led.ranked or ()] == [3.1, 2.75, 2.75, 2.75, 1.2, 1.2, 0.9]


def test_a_ledger_restored_from_its_state_continues_as_the_one_that_never_stopped(o200k: Any) -> None:
    # The pipeline saves the builder's state in the session's store; a resuming process
    # restores it and reads only the messages appended since. Kernel profile: candidates,
    # the best so far, errors (a recurring one), files, run ids, statuses, pending inputs.
    from ctxmem.context.derived import pack, unpack

    msgs = [Message.user("Optimize kernel.py.")]
    for n, geo in enumerate(["1.20", None, "2.75", "0.90", None, "3.10"], 1):
        # the config only in the call's input: a cut between call and result needs it restored
        inp = {"path": f"k{n % 2}.py", "config": {"BLOCK_M": 16 * n}}
        out = _bench(n, f"{n:04d}abcd", "", geo).replace(" · \n", "\n", 1)  # a header without a config
        msgs += _turn(n, "benchmark", inp, out, err=geo is None)
    msgs += _turn(7, "compile", {"path": "kernel.py"}, _oor(204800), err=True)  # benchmark's status stays
    msgs += _turn(8, "edit_file", {"path": "kernel.py"}, "edited kernel.py: replaced 3 lines")
    whole = LedgerBuilder(KERNEL)
    for cut in range(1, len(msgs) + 1):
        head = LedgerBuilder(KERNEL)
        head.update(msgs[:cut])
        state = unpack(pack(head.to_state()))  # as stored
        resumed = LedgerBuilder.from_state(state, KERNEL, id(msgs))
        assert resumed.update(msgs) == whole.update(msgs)
        assert render_ledger(resumed.ledger(), o200k, 500) == render_ledger(whole.ledger(), o200k, 500)
    led = whole.ledger()
    assert led.best is not None and len(led.errors) >= 2 and led.files and led.run_ids
    assert "benchmark" in led.last_status and "compile" in led.last_status
    assert [c.config for c in led.candidates][:2] == ["BLOCK_M=16", "BLOCK_M=32"]
