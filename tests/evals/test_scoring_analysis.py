"""Rule scorers, the LLM judge and its agreement, Wilson intervals and effective lengths
against hand-computed values."""

from __future__ import annotations

import asyncio
import math

import pytest

from ctxmem.clients import ScriptedClient
from ctxmem.evals.analysis import (
    base_score,
    bootstrap,
    effective_length_nolima,
    effective_length_ruler,
    effective_lengths,
    wilson,
)
from ctxmem.evals.scoring import (
    LLMJudge,
    agreement,
    contains,
    exact,
    normalize,
    normalized,
    regex,
    set_f1,
)


def test_rule_scorers() -> None:
    assert exact(" QX7-48213 ", ["QX7-48213"]) == 1.0
    assert exact("qx7-48213", ["QX7-48213"]) == 0.0
    assert normalized("The QX7-48213.", ["qx7-48213"]) == 1.0
    assert normalize("The  Amber, Falcon!") == "amber falcon"
    assert contains("It is QX7-48213, I think.", ["QX7-48213"]) == 1.0
    assert contains("It is QX7-482130.", ["QX7-48213"]) == 0.0  # no partial-token matches
    assert regex("code: QX7-48213", r"[A-Z]{2}\d-\d{5}") == 1.0
    assert set_f1("AB1-11111, CD2-22222", ["AB1-11111", "CD2-22222"]) == 1.0
    assert set_f1("AB1-11111, EF3-33333", ["AB1-11111", "CD2-22222"]) == pytest.approx(0.5)
    assert set_f1("nothing", ["AB1-11111"]) == 0.0


def test_judge_and_agreement() -> None:
    client = ScriptedClient(["CORRECT", "INCORRECT", "correct."])
    judge = LLMJudge(client)

    async def go() -> list[bool]:
        return [(await judge.judge("Q?", ["A"], r))[0] for r in ("A", "B", "A!")]

    assert asyncio.run(go()) == [True, False, True]
    assert "Reference answer(s): A" in client.requests[0].messages[0].text
    # hand-computed: 4 items, 3 agree; p_rule=0.5, p_judge=0.75 -> pe=0.5; kappa=(0.75-0.5)/0.5
    ag = agreement([True, True, False, False], [True, True, True, False])
    assert ag["agreement"] == 0.75 and ag["kappa"] == pytest.approx(0.5)


def test_wilson_hand_values() -> None:
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson(10, 10)
    assert lo == pytest.approx(0.72247, abs=1e-4) and hi == 1.0
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-4) and hi == pytest.approx(0.76341, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)
    from ctxmem.errors import InputError

    for bad in ((5, 3), (-1, 3)):  # was: ValueError: math domain error
        with pytest.raises(InputError, match="must be between 0 and n"):
            wilson(*bad)


SCORES = {
    1_000: [1.0] * 10,            # 100%
    4_000: [1.0] * 9 + [0.0],     # 90%
    16_000: [1.0] * 8 + [0.0] * 2,  # 80%  < 85.6, and = 0.85 * 0.95 base? see below
    64_000: [1.0] * 9 + [0.0],    # 90% again: a late recovery does not count
}


def test_effective_length_ruler() -> None:
    assert effective_length_ruler(SCORES) == 4_000
    assert effective_length_ruler(SCORES, threshold=95) == 1_000
    assert effective_length_ruler({1_000: [0.5]}) is None
    assert effective_length_ruler({1_000: [0.856], 2_000: [0.8559]}) == 1_000


def test_effective_length_nolima() -> None:
    # base = mean score over lengths <= 1000 = 1.0 -> threshold 85%: 16K (80%) fails
    assert base_score(SCORES) == (1.0, [1_000])
    assert effective_length_nolima(SCORES) == 4_000
    # a weaker model: base 0.6 -> threshold 0.51; 0.55 passes at 16K, 0.5 fails at 64K
    weak = {500: [0.6], 1_000: [0.6], 16_000: [0.55], 64_000: [0.5]}
    assert base_score(weak)[0] == pytest.approx(0.6)
    assert effective_length_nolima(weak) == 16_000
    assert effective_length_ruler(weak) is None  # absolute 85.6 is never met
    # no short length tested: the shortest stands in
    assert base_score({8_000: [0.9], 32_000: [0.7]}) == (pytest.approx(0.9), [8_000])
    assert effective_length_nolima({8_000: [0.9], 32_000: [0.7]}) == 8_000
    # a model that fails every cell has no effective length (0.85 x 0 let every length pass)
    assert effective_length_nolima({1_000: [0.0, 0.0], 32_000: [0.0], 128_000: [0.0]}) is None
    assert bootstrap({1_000: [0.0] * 5, 32_000: [0.0] * 5}, effective_length_nolima, n_boot=50).point is None


def test_bootstrap_intervals() -> None:
    certain = {1_000: [1.0] * 20, 8_000: [1.0] * 20, 32_000: [0.0] * 20}
    iv = bootstrap(certain, effective_length_ruler, n_boot=200)
    assert (iv.point, iv.low, iv.high) == (8_000, 8_000, 8_000)
    noisy = {1_000: [1.0] * 20, 8_000: [1.0] * 17 + [0.0] * 3, 32_000: [0.0] * 20}
    a = bootstrap(noisy, effective_length_ruler, n_boot=300, seed=1)
    b = bootstrap(noisy, effective_length_ruler, n_boot=300, seed=1)
    assert a == b  # seeded: deterministic
    assert a.point == 1_000  # 85% < 85.6%
    assert a.low == 1_000 and a.high == 8_000  # resamples land on both sides


def test_effective_lengths_from_rows_excludes_controls() -> None:
    rows = []
    for length, acc in ((1_000, 1.0), (8_000, 0.9), (32_000, 0.2)):
        for i in range(10):
            rows.append({"status": "done", "model": "m", "preset": "none", "needle": "literal", "length": length,
                         "score": 1.0 if i < acc * 10 else 0.0})
    rows += [{"status": "done", "model": "m", "preset": "none", "needle": "nocontext", "length": 1_000, "score": 0.0}]
    rows += [{"status": "refused", "model": "m", "preset": "none", "needle": "literal", "length": 64_000, "score": None}]
    (e,) = effective_lengths(rows, n_boot=50)
    assert e["ruler"]["point"] == 8_000 and e["nolima"]["point"] == 8_000
    assert e["lengths"] == [1_000, 8_000, 32_000]
    assert not math.isnan(e["nolima"]["base_score"])


def test_a_two_part_natural_answer_is_right_when_every_part_appears() -> None:
    from ctxmem.evals.needles import Insert, NeedleSet
    from ctxmem.evals.scoring import score_needles

    line = "tolerance: fp16 atol=2e-03 rtol=1e-02 · fp32 atol=1e-04 rtol=1e-04"
    joined = NeedleSet("natural", "What are the fp16 tolerances (atol/rtol)?", ("2e-03/1e-02",),
                       (Insert(line, 0.5),), "contains")  # as the Workload protocol's answer joins them
    parted = NeedleSet(joined.family, joined.question, joined.answers, joined.inserts, "contains",
                       parts=("2e-03", "1e-02"))
    for ns in (joined, parted):
        for right in ("atol=2e-03, rtol=1e-02", "The fp16 tolerances are atol 2e-03 and rtol 1e-02.", "2e-03/1e-02"):
            assert score_needles(ns, right).correct, right
        for wrong in ("atol=2e-03", "atol=1e-04, rtol=1e-04", "NOT FOUND", ""):
            assert not score_needles(ns, wrong).correct, wrong
    # a one-part answer is unchanged, and a literal needle's answer is never split
    lit = NeedleSet("literal", "Q?", ("x7/y9",), (), "contains")
    assert not score_needles(lit, "y9 and x7").correct


def test_an_empty_reply_is_not_an_abstention() -> None:
    from ctxmem.evals.needles import make_needles
    from ctxmem.evals.scoring import abstained, score_needles

    absent = make_needles("absent", 0.5, 0)
    assert score_needles(absent, "NOT FOUND").correct
    for empty in ("", "   \n"):
        assert not abstained(empty) and not score_needles(absent, empty).correct


def test_effective_lengths_exclude_the_readers_blind_families() -> None:
    rows = []
    for length in (1_000, 2_000, 4_000):
        for _ in range(6):
            rows.append({"status": "done", "model": "extractive", "preset": "none", "needle": "literal",
                         "length": length, "score": 1.0})
            # the lexical reader cannot answer non-literal needles by design: not forgetting
            rows.append({"status": "done", "model": "extractive", "preset": "none", "needle": "nonliteral",
                         "length": length, "score": 0.0})
            # a model reader's non-literal misses do count
            rows.append({"status": "done", "model": "openai:m", "preset": "none", "needle": "nonliteral",
                         "length": length, "score": 1.0 if length < 4_000 else 0.0})
    by_model = {e["model"]: e for e in effective_lengths(rows, n_boot=20)}
    assert by_model["extractive"]["ruler"]["point"] == 4_000
    assert by_model["extractive"]["accuracy_by_length"] == {"1000": 1.0, "2000": 1.0, "4000": 1.0}
    assert by_model["openai:m"]["ruler"]["point"] == 2_000
