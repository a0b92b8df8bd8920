from __future__ import annotations

from pathlib import Path

import pytest

from ctxmem.workloads.kernel import CorrectnessChecker, SandboxLimits, Workspace

# Generous for a loaded 2-core machine: importing torch + triton alone takes 1-3 s.
TEST_LIMITS = SandboxLimits(timeout_s=60.0)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


@pytest.fixture
def checker(workspace: Workspace) -> CorrectnessChecker:
    return CorrectnessChecker(workspace, limits=TEST_LIMITS)


@pytest.fixture
def kernel_source(workspace: Workspace) -> str:
    return (workspace.root / "kernel.py").read_text()
