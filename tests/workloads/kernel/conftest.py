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


@pytest.fixture(scope="session")
def _simx_cache_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    # pytest's cache folder (shared across runs); a run without its cache plugin
    # (-p no:cacheprovider, a read-only checkout) measures into this session's temp folder
    cache = getattr(request.config, "cache", None)
    return str(cache.mkdir("simx-measure") if cache is not None else tmp_path_factory.mktemp("simx-measure"))


@pytest.fixture(autouse=True)
def _simx_measurement_cache(_simx_cache_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # SIMX-1's interpreter measurements are shared across test runs (pytest's cache folder),
    # never written to the user's ~/.cache by a test.
    monkeypatch.setenv("CTXMEM_SIMX_CACHE", _simx_cache_dir)
