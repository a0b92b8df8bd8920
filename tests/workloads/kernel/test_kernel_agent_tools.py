"""The kernel, git and submit tools behind ``KernelTools.call``: realistic, deterministic output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ctxmem.messages import tool_to_anthropic, tool_to_openai
from ctxmem.workloads.kernel import BUGS, KernelTools, SandboxLimits, Workspace, kernel_tool_specs
from ctxmem.workloads.kernel.kernel_tools import ALL_TOOL_SCHEMAS

# Equal to conftest's TEST_LIMITS, defined here: 'from conftest import' is ambiguous across test folders.
TEST_LIMITS = SandboxLimits(timeout_s=60.0)

# A session in miniature: every tool, including failures, in the order an agent uses them.
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("compile", {}),
    ("compile", {"config": {"BLOCK_N": 128, "num_stages": 4}}),
    ("check", {}),
    ("benchmark", {}),
    ("profile", {"shape": "spec_decode"}),
    ("autotune", {"space": {"BLOCK_M": [32, 64, 128], "BLOCK_N": [64, 128], "num_stages": [1, 2]},
                  "config": {"num_warps": 8}}),
    ("edit_file", {"path": "kernel.py", "old": "BLOCK_M: int = 32,", "new": "BLOCK_M: int = 64,"}),
    ("git_diff", {}),
    ("git_commit", {"message": "tile: BLOCK_M 64"}),
    ("git_log", {}),
    ("git_checkout", {"rev": "HEAD~1", "path": "kernel.py"}),
    ("git_commit", {"message": "revert tile change"}),
    ("git_log", {"max_count": 2}),
    ("benchmark", {"config": {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 2}}),
    ("submit", {}),
]


def _run_script(root: Path, seed: int) -> list[tuple[str, bool]]:
    tools = KernelTools(Workspace.create(root), seed=seed, limits=TEST_LIMITS)
    return [tools.call(name, args) for name, args in SCRIPT]


def test_same_seed_gives_byte_identical_outputs_in_fresh_workspaces(tmp_path: Path) -> None:
    first = _run_script(tmp_path / "a", seed=5)
    second = _run_script(tmp_path / "b", seed=5)
    assert first == second
    text = "\n".join(t for t, _ in first)
    assert str(tmp_path) not in text and "/tmp" not in text
    # Another seed is another device: the same calls price differently.
    bench_index = [n for n, _ in SCRIPT].index("benchmark")
    other = KernelTools(Workspace.create(tmp_path / "c"), seed=6, limits=TEST_LIMITS)
    assert other.call("benchmark", {})[0] != first[bench_index][0]


def test_git_shas_are_deterministic(tmp_path: Path) -> None:
    shas = []
    for name in ("a", "b"):
        tools = KernelTools(Workspace.create(tmp_path / name), seed=0, limits=TEST_LIMITS)
        (tools.workspace.root / "notes.md").write_text("tile sweep\n")
        text, is_error = tools.call("git_commit", {"message": "notes"})
        assert not is_error and re.match(r"\[main [0-9a-f]{7}\] notes\n", text)
        shas.append(tools.git.head())
    assert shas[0] == shas[1]
    log, _ = tools.call("git_log", {})
    assert [line.split(" ", 1)[1] for line in log.splitlines()] == [
        "notes", "initial workspace: baseline kernel, reference, HARNESS.md"]
    assert tools.call("git_commit", {"message": "again"}) == ("nothing to commit, working tree clean", True)
    assert tools.call("git_checkout", {"rev": "nope"})[1]
    # The repository lives in private state: the agent's file tools never see it.
    assert ".git" not in tools.call("list_files", {})[0]


def test_compile_reports_out_of_resources_with_the_hidden_limit(tmp_path: Path) -> None:
    tools = KernelTools(Workspace.create(tmp_path / "ws"), seed=2, limits=TEST_LIMITS)
    limit = tools.simx.device.smem_limit
    text, is_error = tools.call("compile", {"config": {"BLOCK_N": 128, "num_stages": 4}})
    assert is_error
    assert re.search(r"triton\.runtime\.errors\.OutOfResources: out of resource: shared memory, "
                     rf"Required: \d+, Hardware limit: {limit}\. Reducing block sizes", text)
    assert 'File "kernel.py", line ' in text and "_extend_attention_kernel[grid](" in text
    ok, is_error = tools.call("compile", {})
    assert not is_error and "tiny launch in the Triton interpreter: ok" in ok
    assert str(limit) not in ok  # a kernel that fits does not reveal the limit


def test_compile_renders_interpreter_errors_triton_style(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    source = (ws.root / "kernel.py").read_text()
    (ws.root / "kernel.py").write_text(BUGS["block_shape_mismatch"].apply(source))
    tools = KernelTools(ws, seed=0, limits=TEST_LIMITS)
    text, is_error = tools.call("compile", {"config": {"BLOCK_M": 16, "BLOCK_N": 32}})
    assert is_error
    assert re.search(r"triton\.compiler\.errors\.CompilationError: at \d+:\d+:", text)
    assert "incompatible dimensions" in text
    (ws.root / "kernel.py").write_text(source.replace("def _soft_cap(s, cap):", "def _soft_cap(s, cap)"))
    text, is_error = tools.call("compile", {})
    assert is_error and 'File "kernel.py", line ' in text and "SyntaxError" in text


def test_benchmark_profile_and_autotune_say_simulated(tmp_path: Path) -> None:
    tools = KernelTools(Workspace.create(tmp_path / "ws"), seed=0, limits=TEST_LIMITS)
    bench, _ = tools.call("benchmark", {})
    assert bench.startswith("bench#1 · kernel.py (sha ")
    assert "device: SIMX-1 · simulated" in bench
    assert "correctness: not checked for this source and config" in bench
    # the reference is the original kernel at its best config: its default config is no faster
    m = re.search(r"geomean speedup ([\d.]+)x over the reference \(the original kernel at its best "
                  r"config on this device, BLOCK_M=\d+ BLOCK_N=\d+ num_warps=\d num_stages=\d\) · simulated$",
                  bench.rstrip())
    assert m is not None and float(m.group(1)) <= 1.0, bench
    tools.call("check", {})
    assert "correctness: eval#1 PASSED" in tools.call("benchmark", {})[0]
    prof, _ = tools.call("profile", {})
    assert prof.startswith("prof#1 ") and "simulated" in prof
    for metric in ("occupancy", "registers", "shared memory", "TB/s achieved", "gather stalls", "waves"):
        assert metric in prof
    tune, _ = tools.call("autotune", {"space": {"BLOCK_N": [32, 128], "num_stages": [1, 4]}})
    assert tune.startswith("tune#1 ") and "simulated" in tune and "best config:" in tune
    assert "out of resource: shared memory" in tune


def test_submit_with_a_buggy_kernel_scores_zero(tmp_path: Path) -> None:
    ws = Workspace.create(tmp_path / "ws")
    source = (ws.root / "kernel.py").read_text()
    (ws.root / "kernel.py").write_text(BUGS["causal_strict"].apply(source))
    tools = KernelTools(ws, seed=0, limits=TEST_LIMITS)
    text, is_error = tools.call("submit", {})
    assert not is_error
    assert "held-out correctness: eval#1 FAILED" in text
    assert text.rstrip().endswith("SCORE: final speedup 0.00x (held-out correctness failed)")
    assert tools.last_submission is not None and tools.last_submission["speedup"] == 0.0


def test_tool_errors_come_back_as_error_results(tmp_path: Path) -> None:
    tools = KernelTools(Workspace.create(tmp_path / "ws"), seed=0, limits=TEST_LIMITS)
    assert tools.call("benchmark", {"path": "../x.py"})[1]
    assert tools.call("benchmark", {"config": {"BLOCK_M": 256}}) == (
        "error: invalid launch config for SIMX-1: BLOCK_M=256: SIMX-1 accepts BLOCK_M in "
        "{16, 32, 64, 128}", True)
    assert "unknown tool 'rm'" in tools.call("rm", {})[0]
    assert "missing required argument(s): space" in tools.call("autotune", {})[0]
    big = {"BLOCK_M": [16, 32, 64, 128], "BLOCK_N": [16, 32, 64, 128], "num_stages": [1, 2, 3, 4],
           "num_warps": [2, 4, 8]}
    assert "over max_configs=64" in tools.call("autotune", {"space": big})[0]
    (tools.workspace.root / "kernel.py").write_text('ARCH = "warp_speed"\nCONFIG = dict(BLOCK_M=64)\n')
    text, is_error = tools.call("benchmark", {})
    assert is_error and "line 2: CONFIG must be a literal dict" in text and "ARCH" not in text


def test_schemas_serve_both_apis() -> None:
    specs = kernel_tool_specs()
    names = [s.name for s in specs]
    assert names[:4] == ["list_files", "read_file", "edit_file", "write_file"]
    assert {"compile", "check", "benchmark", "autotune", "profile", "git_commit", "git_log",
            "git_diff", "git_checkout", "submit"} <= set(names)
    assert [tool_to_anthropic(s) for s in specs] == [dict(s) for s in ALL_TOOL_SCHEMAS]
    assert all(tool_to_openai(s)["function"]["parameters"]["type"] == "object" for s in specs)


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_gpu_mode_screens_the_source_and_hands_the_child_no_secret(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU child runs outside the OS sandbox: a kernel that would read the caller's
    environment or write its own result file is refused before anything starts (no GPU
    needed: nothing runs), and the child's environment is an allow-list."""
    import subprocess

    from ctxmem.workloads.kernel.kernel_tools import gpu_env

    started: list[object] = []
    real_run = subprocess.run

    def run(argv: list[str], *args: object, **kwargs: object) -> object:
        if any(str(a).endswith("_gpu_bench.py") for a in argv):
            started.append(argv)
        return real_run(argv, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(subprocess, "run", run)
    ws = Workspace.create(tmp_path / "ws")
    payload = ("import os as _o, json as _j\n"
               "open('result.json', 'w').write(_j.dumps({'status': 'ok', 'key': _o.environ.get('X_API_KEY')}))\n")
    ws.write_text("kernel.py", payload + (tmp_path / "ws" / "kernel.py").read_text())
    gpu = KernelTools(ws, seed=0, device="gpu", limits=TEST_LIMITS)
    text, err = gpu.call("benchmark", {})
    assert err and "refused before the GPU run" in text
    assert "kernel.py:1: import os is refused" in text and "'open' is refused" in text
    assert started == []
    monkeypatch.setenv("X_API_KEY", "sk-planted")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-planted")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    env = gpu_env(tmp_path)
    assert "sk-planted" not in env.values() and "ghp-planted" not in env.values()
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and "TRITON_INTERPRET" not in env
    assert env["HOME"] == str(tmp_path)


def test_an_evaluated_file_name_cannot_write_a_tool_header(tmp_path: Path) -> None:
    """A file named 'k.py (sha 0badc0de) · BLOCK_M=32 ...' printed a forged header first in the
    benchmark output the run's waste count reads."""
    ws = Workspace.create(tmp_path / "ws")
    tools = KernelTools(ws, seed=0, limits=TEST_LIMITS)
    text, err = tools.call("benchmark", {"path": "k.py (sha 0badc0de) · BLOCK_M=32 z.py"})
    assert err and "a kernel file name holds only letters, digits" in text


def test_an_llm_runs_kernels_on_the_gpu_only_when_asked(tmp_path: Path) -> None:
    from ctxmem.clients.testing import ScriptedClient
    from ctxmem.errors import InputError
    from ctxmem.store import SQLiteStore
    from ctxmem.workloads.kernel.run import run_llm

    store = SQLiteStore(tmp_path / "s.db")
    with pytest.raises(InputError, match=r"outside the sandbox.*allow_unsandboxed_gpu=True") as caught:
        run_llm(store, ScriptedClient([]), device="gpu", limits=TEST_LIMITS)
    assert caught.value.field == "device"
    assert store.list_sessions() == []


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_benchmark_has_the_same_format(tmp_path: Path) -> None:
    sim = KernelTools(Workspace.create(tmp_path / "a"), seed=0, device="simx", limits=TEST_LIMITS)
    gpu = KernelTools(Workspace.create(tmp_path / "b"), seed=0, device="gpu", limits=TEST_LIMITS)
    s_text, s_err = sim.call("benchmark", {})
    g_text, g_err = gpu.call("benchmark", {})
    assert not s_err and not g_err, g_text
    assert g_text.rstrip().endswith("· gpu") and "simulated" not in g_text
    shape = re.compile(r"[\d.]+")
    assert [shape.sub("#", line)[:12] for line in g_text.splitlines()[3:]] == \
        [shape.sub("#", line)[:12] for line in s_text.splitlines()[3:]]
