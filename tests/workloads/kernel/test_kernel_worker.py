"""The warm sandbox gives the one-shot path's results and survives candidates that misbehave."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctxmem.workloads.kernel import CorrectnessChecker, SandboxLimits, Workspace, bwrap
from ctxmem.workloads.kernel.bugs import BUGS
from ctxmem.workloads.kernel.worker import shared_box

# These run agent-written code: only in the sandbox. Where bubblewrap cannot start they
# skip, and test_attacks.py::test_without_bwrap_nothing_runs_unless_allowed tests the refusal.
_SANDBOX = bwrap.probe()
needs_sandbox = pytest.mark.skipif(_SANDBOX is not None, reason=f"no sandbox here: {_SANDBOX}")
pytestmark = needs_sandbox

# Equal to conftest's TEST_LIMITS, defined here: 'from conftest import' is ambiguous across test folders.
TEST_LIMITS = SandboxLimits(timeout_s=60.0)


def _comparable(result_dict: dict) -> dict:
    # Everything but timings and memory figures, which vary run to run.
    out = {k: v for k, v in result_dict.items() if k not in ("wall_s", "extra")}
    out["cases"] = [{k: v for k, v in c.items() if k != "seconds"} for c in out["cases"]]
    return out


def test_warm_and_one_shot_give_the_same_results(tmp_path: Path) -> None:
    source = (Workspace.create(tmp_path / "seed").root / "kernel.py").read_text()
    candidates = [source, BUGS["prefix_value_load_unmasked"].apply(source),
                  BUGS["store_without_row_mask"].apply(source), "x = 1\n"]
    warm = CorrectnessChecker(Workspace.create(tmp_path / "warm"), limits=TEST_LIMITS, warm=True)
    cold = CorrectnessChecker(Workspace.create(tmp_path / "cold"), limits=TEST_LIMITS, warm=False)
    for candidate in candidates:
        a = warm.check(source=candidate, use_cache=False)
        b = cold.check(source=candidate, use_cache=False)
        assert a.render() == b.render()
        assert _comparable(a.to_dict()) == _comparable(b.to_dict())
        # The warm path really was warm: its child did not import torch itself.
        if "import_seconds" in a.extra:
            assert a.extra["import_seconds"] < b.extra["import_seconds"]


def test_worker_survives_a_loop_and_a_crash(tmp_path: Path) -> None:
    limits = SandboxLimits(timeout_s=10.0)
    checker = CorrectnessChecker(Workspace.create(tmp_path / "ws"), limits=limits, warm=True)
    worker = shared_box()
    assert checker.check().passed
    starts = worker.starts
    loop = "def launch(*args, **kwargs):\n    while True:\n        pass\n"
    timed_out = checker.check(source=loop)
    assert timed_out.status == "timeout"
    assert "TIMEOUT: killed after 10s wall clock (0/6 cases finished before the kill)" in timed_out.render()
    assert checker.check(source=checker.workspace.root.joinpath("kernel.py").read_text() + "\n#1\n").passed
    # Not recycled: the zygote killed the child and swept the sandbox's PID namespace.
    assert worker.starts == starts
    crash = "import faulthandler\n\ndef launch(*args, **kwargs):\n    faulthandler._sigsegv()\n"
    crashed = checker.check(source=crash)
    assert crashed.status == "crashed" and "CRASHED: killed by SIGSEGV" in crashed.render()
    exited = checker.check(source="import os\n\ndef launch(*a, **k):\n    os._exit(3)\n")
    assert "CRASHED: exited with status 3 before reporting a result" in exited.render()
    after = checker.check(source=checker.workspace.root.joinpath("kernel.py").read_text() + "\n#2\n")
    assert after.passed and after.extra.get("import_seconds") == 0.0  # served warm again
    worker.close()
    assert not worker.alive
    # A closed worker starts again on demand.
    assert checker.check(source=checker.workspace.root.joinpath("kernel.py").read_text() + "\n#3\n").passed
