"""Candidate code that misbehaves is stopped and reported, and the checker survives it."""

from __future__ import annotations

from pathlib import Path

from ctxmem.workloads.kernel import CorrectnessChecker, SandboxLimits, Workspace

HEADER = "import torch\n\n\n"


def _launch(body: str) -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return HEADER + "def launch(*args, **kwargs):\n" + lines + "\n"


def test_infinite_loop_is_killed_by_the_timeout(workspace: Workspace) -> None:
    checker = CorrectnessChecker(workspace, limits=SandboxLimits(timeout_s=12.0))
    result = checker.check(source=_launch("while True:\n    pass"))
    assert result.status == "timeout"
    assert result.wall_s < 30
    text = result.render()
    assert "TIMEOUT: killed after 12s wall clock (0/6 cases finished before the kill)" in text
    # A timeout depends on load, not only on code: it is not cached.
    assert checker.cache.get(checker.cache_key(_launch("while True:\n    pass"),
                                                result.config, 0, "dev")) is None


def test_allocating_20_gb_is_stopped_by_the_memory_limit(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch(
        "x = torch.empty(20 * 2**30, dtype=torch.uint8)\nx.fill_(1)\nreturn x"
    ))
    assert result.status == "memory_limit", result.render()
    text = result.render()
    assert f"MEMORY LIMIT: stopped at the sandbox's {checker.limits.memory_mb} MiB" in text
    assert "can't allocate memory" in text


def test_python_level_allocation_is_stopped_too(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("blob = bytearray(20 * 2**30)\nreturn blob"))
    assert result.status == "memory_limit", result.render()
    assert "MemoryError" in result.render()


def test_opening_a_socket_is_refused_and_reported(checker: CorrectnessChecker) -> None:
    source = _launch(
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('127.0.0.1', 9), timeout=1)\n"
        "except OSError:\n"
        "    pass  # swallowing the refusal does not hide it\n"
    )
    result = checker.check(source=source)
    assert result.status == "sandbox_violation"
    assert result.violations and result.violations[0]["kind"] == "network access"
    assert "network access refused: socket.getaddrinfo('127.0.0.1', 9" in result.render()
    assert len(result.cases) == 1  # the first refusal ends the check


def test_writing_outside_the_workspace_is_refused(checker: CorrectnessChecker, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    result = checker.check(source=_launch(f"open({str(outside)!r}, 'w').write('x')"))
    assert result.status == "sandbox_violation"
    assert "file write outside the workspace refused" in result.render()
    assert str(outside) in result.render()
    assert not outside.exists()


def test_relative_escape_and_private_state_are_refused(checker: CorrectnessChecker, workspace: Workspace) -> None:
    result = checker.check(source=HEADER + "open('../escaped.txt', 'w').write('x')\nopen('.ctxmem/results.sqlite', 'w')\n")
    assert result.status == "sandbox_violation"
    assert not (workspace.root.parent / "escaped.txt").exists()
    assert (workspace.state_dir / "results.sqlite").stat().st_size > 0


def test_starting_a_process_is_refused(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("import os\nos.system('true')"))
    assert result.status == "sandbox_violation"
    assert "starting a process refused: os.system" in result.render()


def test_scratch_files_inside_the_workspace_are_allowed(
    checker: CorrectnessChecker, workspace: Workspace, kernel_source: str
) -> None:
    source = kernel_source + "\nwith open('notes.txt', 'w') as _f:\n    _f.write('tile sweep')\n"
    result = checker.check(source=source)
    assert result.passed, result.render()
    assert (workspace.root / "notes.txt").read_text() == "tile sweep"


def test_the_checker_keeps_working_after_a_violation(checker: CorrectnessChecker) -> None:
    bad = checker.check(source=_launch("import socket\nsocket.socket()"))
    assert bad.status == "sandbox_violation"
    assert "network access refused: socket.__new__" in bad.render()
    good = checker.check()
    assert good.passed and good.eval_id == bad.eval_id + 1


def test_an_early_exit_is_reported_as_a_crash(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("import os\nos._exit(3)"))
    assert result.status == "crashed"
    assert "CRASHED: exited with status 3 before reporting a result (0/6 cases finished)" in result.render()


def test_a_segfault_is_reported_as_a_crash(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("import ctypes\nctypes.string_at(0)"))
    assert result.status == "crashed"
    assert "CRASHED: killed by SIGSEGV" in result.render()
