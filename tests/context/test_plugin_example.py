"""The example plugin (examples/plugin_strategy) is found by name and keeps the contract."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import strategies as st
from test_strategy_properties import assert_mostly_real, run_examples

from ctxmem.context import STRATEGIES, BuildRequest, History, make_strategy
from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.tokens import Budget

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin_strategy"


@pytest.fixture(scope="module", autouse=True)
def registered() -> None:
    meta = tomllib.loads((PLUGIN / "pyproject.toml").read_text())
    ref = meta["project"]["entry-points"]["ctxmem.strategies"]["keep_errors"]
    if str(PLUGIN) not in sys.path:
        sys.path.insert(0, str(PLUGIN))
    if "keep_errors" not in STRATEGIES:  # installed plugins are discovered through the entry point
        STRATEGIES.register("keep_errors", ref)


def test_plugin_is_found_by_name_with_did_you_mean() -> None:
    assert "keep_errors" in STRATEGIES.names()
    assert make_strategy("keep_errors", {"max_errors": 3}).config.max_errors == 3
    with pytest.raises(Exception, match="keep_errors"):
        make_strategy("keep_eror", {})


def test_plugin_keeps_the_contract(o200k: Any) -> None:
    outcomes = run_examples(lambda: make_strategy("keep_errors", {}), ((), 0), o200k, st.integers(0, 2))
    assert_mostly_real(outcomes)


def test_dropped_errors_are_kept_as_pinned_facts(o200k: Any) -> None:
    msgs = [Message.user("task")]
    for i in range(30):
        msgs.append(Message.assistant(ToolUseBlock(f"t{i}", "compile", {})))
        text = f"OutOfResources: shared memory {i}\n" + "log line\n" * 60
        msgs.append(Message("user", (ToolResultBlock(f"t{i}", text, is_error=i == 2),)))
    out = make_strategy("keep_errors", {}).build(BuildRequest(History.from_messages(msgs, o200k), Budget(2000, 100)))
    assert 5 in out.report.dropped
    assert "earlier failure (t2): OutOfResources: shared memory 2" in out.messages[0].content[-1].text
