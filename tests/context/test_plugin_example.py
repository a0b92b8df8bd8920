"""The example plugin (examples/plugin_strategy) is found by name and keeps the contract."""

from __future__ import annotations

import os
import subprocess
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


def test_an_installed_plugin_is_discovered_through_its_entry_point(tmp_path: Path) -> None:
    """What `pip install examples/plugin_strategy` leaves on sys.path — the package and a
    dist-info with the pyproject's entry point — is enough: a fresh process finds the
    strategy by name without any registration call."""
    meta = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]
    site = tmp_path / "site"
    dist = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n")
    eps = "\n".join(f"{k} = {v}" for k, v in meta["entry-points"]["ctxmem.strategies"].items())
    (dist / "entry_points.txt").write_text(f"[ctxmem.strategies]\n{eps}\n")
    code = (
        "from ctxmem.context import STRATEGIES, make_strategy\n"
        "s = make_strategy('keep_errors', {'max_errors': 2})\n"
        "print(type(s).__module__, s.config.max_errors, 'keep_errors' in STRATEGIES.names())\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{PLUGIN}"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ctxmem_keep_errors", "2", "True"]
    # without the dist-info the name is unknown (the test is not passing by accident)
    env["PYTHONPATH"] = str(PLUGIN)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "keep_errors" in r.stderr
