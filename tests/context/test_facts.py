"""Must-keep fact extraction: kinds, de-duplication, the cap, normalized matching."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ctxmem.context.facts import Fact, extract_facts, missing_facts, normalize
from ctxmem.messages import Message, TextBlock, ToolResultBlock, ToolUseBlock
from ctxmem.samples import synthetic_session
from ctxmem.workloads.kernel.fact_profile import PROFILE as KERNEL

OOR = (
    "triton.runtime.errors.OutOfResources: out of resource: shared memory, Required: 204800, "
    "Hardware limit: 101376. Reducing block sizes or `num_stages` may help."
)


def _conversation() -> list[Message]:
    return [
        Message.user("Speed up src/kernels/attn.py. You must keep atol 2e-3. Thanks for the help."),
        Message.assistant(TextBlock("Compiling first."), ToolUseBlock("t1", "compile", {"path": "src/kernels/attn.py"})),
        Message("user", (ToolResultBlock("t1", "[compile] BLOCK_M=128\nwarning: unused\n" + OOR, is_error=True),)),
        Message.assistant(ToolUseBlock("t2", "benchmark", {"target": "kernel.py"})),
        Message("user", (ToolResultBlock("t2", "bench#7 median over 100 runs\nb1_h8 1.0 0.5 2.00x\ngeomean speedup: 3.41x"),)),
        Message.assistant(ToolUseBlock("t3", "benchmark", {"target": "kernel.py"})),
        Message("user", (ToolResultBlock("t3", "bench#9 median over 100 runs\ngeomean speedup: 2.10x"),)),
        Message.assistant(ToolUseBlock("t4", "git_log", {})),
        Message("user", (ToolResultBlock("t4", "a1b2c3d Tile the kernel.\n0f9e8d7 Older change."),)),
        Message.user("Never change reference.py; only edit kernel.py. Compile again and report."),
    ]


def _by_kind(facts: list[Fact]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in facts:
        out.setdefault(f.kind, []).append(f.text)
    return out


def test_every_kind_is_extracted_with_its_message() -> None:
    facts = extract_facts(_conversation(), profile=KERNEL)
    kinds = _by_kind(facts)
    assert "You must keep atol 2e-3." in kinds["constraint"]
    assert "Never change reference.py; only edit kernel.py." in kinds["constraint"]
    assert not any("Thanks" in c for c in kinds["constraint"])
    assert {"src/kernels/attn.py", "kernel.py", "reference.py"} <= set(kinds["path"])
    assert {"bench#7", "bench#9", "a1b2c3d"} <= set(kinds["id"])
    assert "0f9e8d7" not in kinds["id"]  # only the newest sha of a git log
    assert {"101376", "204800", "3.41x"} <= set(kinds["number"])
    [err] = kinds["error"]
    assert err.startswith("triton.runtime.errors.OutOfResources: out of resource: shared memory")
    assert "Hardware limit: 101376." in err and "Reducing" not in err
    [best] = [f for f in facts if f.kind == "best"]
    assert "3.41x" in best.text and "bench#7" in best.text and best.message_index == 4
    err_fact = next(f for f in facts if f.kind == "error")
    assert err_fact.message_index == 2


def test_facts_are_ordered_deduplicated_and_offset() -> None:
    conv = _conversation()
    facts = extract_facts(conv + conv[2:3], start=10)
    texts = [normalize(f.text) for f in facts]
    assert len(texts) == len(set(texts))
    assert [f.message_index for f in facts] == sorted(f.message_index for f in facts)
    assert min(f.message_index for f in facts) >= 10


def test_the_cap_keeps_higher_kinds_first() -> None:
    conv = synthetic_session(60, seed=2)
    conv[0] = Message.user("Optimize kernel.py. Never touch reference.py.")
    capped = extract_facts(conv, max_facts=5, profile=KERNEL)
    assert len(capped) == 5
    kinds = [f.kind for f in capped]
    assert "constraint" in kinds and "best" in kinds
    assert "number" not in kinds
    assert extract_facts(conv, max_facts=5, profile=KERNEL) == capped  # deterministic


def test_the_generic_profile_knows_no_workload_metric() -> None:
    """No 'best' without a profile that names a metric: speedups are the kernel's word."""
    generic = extract_facts(_conversation())
    assert not [f for f in generic if f.kind == "best"]
    assert "3.41x" in {f.text for f in generic}  # still a number with a unit


def test_missing_facts_uses_normalized_matching() -> None:
    facts = extract_facts(_conversation())
    summary = (
        "Edited **SRC/kernels/attn.py**; `kernel.py` is the target.  Never change reference.py; only edit kernel.py.\n"
        "Best: 3.41x on bench#7. You must keep   atol 2e-3."
    )
    missing = {f.text for f in missing_facts(facts, summary)}
    assert "src/kernels/attn.py" not in missing
    assert "kernel.py" not in missing
    assert not any(f.kind == "best" for f in missing_facts(facts, summary))
    assert "You must keep atol 2e-3." not in missing
    assert "101376" in missing and "a1b2c3d" in missing
    assert missing_facts(facts, "") == facts


_ERROR_WORDS = ["Error", "error", "error:", "ValueError", "Exception", "Exceeded", "Failure", "Interrupt",
                "KeyboardInterrupt", "OutOfResources", "Traceback", "panic", "fatal error", "torch.cuda.", "x.", "(",
                ":", " ", "rror", "Err", "or", "mod.Sub", "TimeLimitExceeded"]


@given(st.lists(st.one_of(st.sampled_from(_ERROR_WORDS), st.text(max_size=6)), max_size=12).map("".join))
@settings(max_examples=300, deadline=None)
def test_error_signature_prefilter_never_changes_the_answer(line: str) -> None:
    """The substring prefilter only skips lines the regex cannot match."""
    import re

    from ctxmem.context.facts import _ERROR, _clip, error_signature

    m = _ERROR.search(line)
    expected = None
    if m and m.group(1) != "Traceback":
        rest = m.group(2).strip()
        head = re.split(r"(?<=[.!?])\s", rest, maxsplit=1)[0] if rest else ""
        expected = _clip(f"{m.group(1)}: {head}" if head else m.group(1))
    assert error_signature(line) == expected


_PATH_PIECES = ["/", ".", "..", "~", "-", "_", "a", "src", "x.py", "log", ".md", "1.2", "/tmp/", "~/", " ", "(", "#",
                "é", "\n", "3", "v1.0", "a.b.c", "cu", ".json", "//", "-x", "."]


@given(st.lists(st.one_of(st.sampled_from(_PATH_PIECES), st.text(max_size=4)), max_size=14).map("".join))
@example("open ~/src/kern.py, then ../a/b and ./x.md; v1.2.3 /tmp/a-b/c.log x~/y/z a.b.c.cu 3/4/2026")
@settings(max_examples=400, deadline=None)
def test_the_path_pattern_matches_what_it_matched_without_its_lookahead(text: str) -> None:
    import re

    from ctxmem.context.facts import _PATH, _PATH_BODY

    plain = re.compile(rf"(?<![\w/.-]){_PATH_BODY}")
    assert [m.span() for m in _PATH.finditer(text)] == [m.span() for m in plain.finditer(text)]
