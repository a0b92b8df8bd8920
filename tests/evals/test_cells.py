"""Cells: refusal instead of truncation, agent-session needles through strategies, survival
attribution, controls, needle authoring rules, config keys."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ctxmem.errors import InputError, UnknownNameError
from ctxmem.evals.attribution import fate, label, survival, worst
from ctxmem.evals.cells import Cell, CellRefusedError, build_cell, cell_key, resolve
from ctxmem.evals.haystack import NeedleUnplaceableError
from ctxmem.evals.needles import NONLITERAL, make_needles
from ctxmem.evals.readers import _STOP, ExtractiveReader
from ctxmem.evals.scoring import score_needles


@pytest.fixture(autouse=True)
def _tiktoken(o200k: Any) -> None:
    """Every test here measures in o200k_base (skips when it cannot be loaded)."""


def test_too_long_cell_is_refused_not_truncated() -> None:
    with pytest.raises(CellRefusedError) as info:
        build_cell(Cell("prose", 150_000, 0.5, "literal", window=128_000))
    assert info.value.needed > info.value.available == 128_000
    assert "refused rather than truncated" in str(info.value)
    # a strategy that cannot fit the input refuses too (dump raises on overflow)
    with pytest.raises(CellRefusedError, match="dump-1m"):
        build_cell(Cell("agent", 40_000, 0.5, "literal", "dump-1m", window=32_768))


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(UnknownNameError, match="tokenizer"):
        build_cell(Cell("prose", 2_000, 0.5, "literal", tokenizer="o201k_base"))
    with pytest.raises(UnknownNameError, match="needle family"):
        make_needles("literall", 0.5, 0)
    with pytest.raises(UnknownNameError, match="haystack source"):
        build_cell(Cell("poetry", 2_000, 0.5, "literal"))
    with pytest.raises(InputError, match="length"):
        build_cell(Cell("agent", 100, 0.5, "literal", "dump-1m"))


def test_key_covers_the_resolved_config() -> None:
    a = Cell("prose", 4_000, 0.5, "literal")
    assert cell_key(resolve(a)) == cell_key(resolve(Cell("prose", 4_000, 0.5, "literal")))
    for other in (Cell("prose", 4_000, 0.5, "literal", seed=1), Cell("code", 4_000, 0.5, "literal"),
                  Cell("prose", 4_000, 0.5, "literal", tokenizer="cl100k_base"),
                  Cell("prose", 4_000, 0.5, "literal", "window-32k")):
        assert cell_key(resolve(other)) != cell_key(resolve(a))
    assert resolve(a)["tokenizer"] == "tiktoken:o200k_base"
    assert resolve(Cell("prose", 4_000, 0.5, "literal", "window-32k"))["preset"].startswith("window-32k:")


def test_agent_session_needles_through_strategies() -> None:
    reader = ExtractiveReader()
    # dump keeps everything: the needle reaches the reader verbatim and is found
    kept = build_cell(Cell("agent", 48_000, 0.0, "literal", "dump-1m", seed=2))
    assert 0.995 * 48_000 <= kept.length_tokens <= 48_000
    assert (kept.survival, kept.fate) == ("verbatim", "kept")
    s = score_needles(kept.needles, reader.answer(kept.messages))
    assert s.correct and label(s.correct, kept.survival, kept.fate) == "correct"
    # a 32K window drops the early tool result holding the needle
    dropped = build_cell(Cell("agent", 48_000, 0.0, "literal", "window-32k", seed=2))
    assert (dropped.survival, dropped.fate) == ("absent", "dropped")
    assert dropped.request_tokens < 32_768
    s = score_needles(dropped.needles, reader.answer(dropped.messages))
    assert not s.correct and label(s.correct, dropped.survival, dropped.fate) == "dropped-by-strategy"
    # masking old tool outputs replaces it with a handle, and the needle line (rare, specific)
    # is carried verbatim in the strategy's salient-facts section
    masked = build_cell(Cell("agent", 48_000, 0.2, "literal", "masking-turns-128k", seed=2))
    assert (masked.survival, masked.fate) == ("verbatim", "masked")
    assert masked.strategy_report is not None and masked.strategy_report["sections"].get("facts", 0) > 0
    # near the end the needle survives every strategy
    late = build_cell(Cell("agent", 48_000, 1.0, "literal", "window-32k", seed=2))
    assert late.survival == "verbatim"
    assert late.placed[0]["tool_call"] == late.placed[0]["calls"] - 1


def test_attribution_labels_on_constructed_cases() -> None:
    assert label(True, "verbatim", "kept") == "correct"
    assert label(False, "verbatim", "kept") == "missed-by-model"
    assert label(False, "absent", "dropped") == "dropped-by-strategy"
    assert label(False, "absent", "masked") == "dropped-by-strategy"
    assert label(False, "absent", "summarized") == "distorted-by-summary"
    assert label(False, "normalized", "summarized") == "distorted-by-summary"
    assert label(False, "normalized", "masked") == "distorted-by-summary"
    assert label(False, "normalized", "kept") == "missed-by-model"
    assert label(False, "n/a", "kept") == "missed-by-model"
    needle = "The archive code assigned to the amber falcon is QX7-48213."
    assert survival(needle, f"noise. {needle} more") == "verbatim"
    assert survival(needle, "noise. THE ARCHIVE code assigned\n to the amber   falcon is qx7-48213. x") == "normalized"
    assert survival(needle, "summary: amber falcon → QX7-48213", value="QX7-48213") == "normalized"
    assert survival(needle, "summary: a code was assigned", value="QX7-48213") == "absent"
    assert worst(["verbatim", "absent", "normalized"]) == "absent"
    assert fate(3, dropped=range(1, 3), masked=[3], summarized=()) == "masked"
    assert fate(2, dropped=range(1, 3), masked=[3], summarized=()) == "dropped"
    assert fate(5, dropped=(), masked=(), summarized=range(4, 9)) == "summarized"


def test_wrong_answer_on_verbatim_needle_is_missed_by_model() -> None:
    built = build_cell(Cell("prose", 4_000, 0.5, "multikey", seed=5))
    wrong = score_needles(built.needles, built.needles.wrong[0])  # the reader picked a distractor
    assert not wrong.correct and wrong.chose_distractor
    assert label(wrong.correct, built.survival, built.fate) == "missed-by-model"
    right = score_needles(built.needles, ExtractiveReader().answer(built.messages))
    assert right.correct  # lexical coverage separates the near misses


def test_needle_absent_and_no_context_controls() -> None:
    reader = ExtractiveReader()
    absent = build_cell(Cell("prose", 8_000, 0.5, "absent", seed=1))
    assert absent.needles.answers == () and len(absent.needles.inserts) == 3
    for ins in absent.needles.inserts:  # the near-miss distractors are in the document
        assert ins.text in absent.messages[0].content[0].text  # type: ignore[union-attr]
    answer = reader.answer(absent.messages)
    assert answer == "NOT FOUND"
    assert score_needles(absent.needles, answer).correct
    assert not score_needles(absent.needles, absent.needles.wrong[0]).correct  # a hallucinated value fails
    nocontext = build_cell(Cell("prose", 8_000, 0.5, "nocontext", seed=1))
    assert nocontext.length_tokens < 100 and len(nocontext.messages) == 1
    guess = reader.answer(nocontext.messages)
    assert not score_needles(nocontext.needles, guess).correct  # unguessable without the document


def test_nonliteral_needles_share_no_content_word_with_their_question() -> None:
    assert len(NONLITERAL) >= 20
    def words(t: str) -> set[str]:
        return {w for w in re.findall(r"[a-z]+", t.lower()) if w not in _STOP and w != "name"}
    for needle, question in NONLITERAL:
        assert not words(needle) & words(question), (needle, question)
    built = build_cell(Cell("prose", 4_000, 0.5, "nonliteral", seed=3))
    # the lexical reader cannot bridge the association: it abstains instead of guessing
    assert ExtractiveReader().answer(built.messages) == "NOT FOUND"


def test_multivalue_set_f1() -> None:
    built = build_cell(Cell("log", 6_000, 0.3, "multivalue", seed=4))
    answer = ExtractiveReader().answer(built.messages)
    s = score_needles(built.needles, answer)
    assert s.correct and s.score == 1.0
    half = score_needles(built.needles, ", ".join(built.needles.answers[:2]))
    assert half.score == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_multivalue_has_near_miss_distractors_that_cost_precision() -> None:
    ns = make_needles("multivalue", 0.3, 4)
    needles = [i for i in ns.inserts if i.role == "needle"]
    dis = [i for i in ns.inserts if i.role == "distractor"]
    assert len(needles) == 4 and len(dis) == 3 and len(ns.wrong) == 3
    assert not set(ns.wrong) & set(ns.answers)
    key = re.search(r"assigned to the (\w+) (\w+) is", needles[0].text)
    assert key is not None
    adj, noun = key.groups()
    for d in dis:  # a near miss: same sentence shape, shares exactly one key word with the target
        m = re.search(r"^One archive code assigned to the (\w+) (\w+) is ([A-Z]{2}\d-\d{5})\.$", d.text)
        assert m is not None and (m.group(1) == adj) != (m.group(2) == noun) and m.group(3) in ns.wrong
    # the revision changes the key, so results stored before the distractors are not reused
    c = Cell("log", 6_000, 0.3, "multivalue", seed=4)
    assert resolve(c)["needle_revision"] == 2 and "needle_revision" not in resolve(Cell("log", 6_000, 0.3, "literal"))
    built = build_cell(c)
    assert all(v in built.messages[0].content[0].text for v in ns.wrong)  # placed in the document
    right = score_needles(ns, ", ".join(ns.answers))
    fooled = score_needles(ns, ", ".join([*ns.answers, *ns.wrong]))
    assert right.correct and not right.chose_distractor
    assert fooled.chose_distractor and not fooled.correct and fooled.score == pytest.approx(2 * (4 / 7) / (4 / 7 + 1))


def test_natural_needles_need_an_agent_session_and_short_cells_are_unplaceable() -> None:
    with pytest.raises(InputError, match="natural needles"):
        build_cell(Cell("prose", 4_000, 0.5, "natural"))
    with pytest.raises(InputError, match="natural needles"):
        make_needles("natural", 0.5, 0)
    # the synthetic agent session has no kernel facts: unplaceable (refused by the runner)
    with pytest.raises(NeedleUnplaceableError, match="no natural needle"):
        build_cell(Cell("agent", 6_000, 0.5, "natural"))
    with pytest.raises(NeedleUnplaceableError, match=r"needles need|no room"):
        build_cell(Cell("prose", 30, 0.5, "multikey"))


def test_expand_refuses_an_axis_that_is_not_a_list_of_its_kind() -> None:
    """A window of 0 was read as "no window" and scored; a bare string was read letter by
    letter; lengths, depths and max_tokens were not checked at all."""
    from ctxmem.evals.grid import expand

    base: dict[str, Any] = {"sources": ["essays"], "lengths": [1000], "depths": [0.5], "needles": ["literal"]}
    for change, field in [({"lengths": [0]}, "lengths"), ({"lengths": [-5]}, "lengths"), ({"lengths": [1.5]}, "lengths"),
                          ({"depths": [2.0]}, "depths"), ({"depths": [float("nan")]}, "depths"),
                          ({"window": 0}, "window"), ({"max_tokens": -1}, "max_tokens"),
                          ({"seeds": "01"}, "seeds"), ({"needles": "literal"}, "needles")]:
        with pytest.raises(InputError) as exc:
            expand(**{**base, **change})
        assert exc.value.field == field, change
    assert len(expand(**base, window=8000, seeds=range(2))) == 2
