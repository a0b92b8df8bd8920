"""Candidate code that misbehaves is stopped and reported, and the checker survives it."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ctxmem.workloads.kernel import CorrectnessChecker, SandboxLimits, Workspace, bwrap

# These run agent-written code: only in the sandbox. Where bubblewrap cannot start they
# skip, and test_attacks.py::test_without_bwrap_nothing_runs_unless_allowed tests the refusal.
_SANDBOX = bwrap.probe()
needs_sandbox = pytest.mark.skipif(_SANDBOX is not None, reason=f"no sandbox here: {_SANDBOX}")

HEADER = "import torch\n\n\n"


def _launch(body: str) -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return HEADER + "def launch(*args, **kwargs):\n" + lines + "\n"


@needs_sandbox
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


@needs_sandbox
def test_allocating_20_gb_is_stopped_by_the_memory_limit(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch(
        "x = torch.empty(20 * 2**30, dtype=torch.uint8)\nx.fill_(1)\nreturn x"
    ))
    assert result.status == "memory_limit", result.render()
    text = result.render()
    assert f"MEMORY LIMIT: stopped at the sandbox's {checker.limits.memory_mb} MiB" in text
    assert "can't allocate memory" in text


@needs_sandbox
def test_python_level_allocation_is_stopped_too(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("blob = bytearray(20 * 2**30)\nreturn blob"))
    assert result.status == "memory_limit", result.render()
    assert "MemoryError" in result.render()


@needs_sandbox
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


@needs_sandbox
def test_writing_outside_the_workspace_is_refused(checker: CorrectnessChecker, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    result = checker.check(source=_launch(f"open({str(outside)!r}, 'w').write('x')"))
    assert result.status == "sandbox_violation"
    assert "file write outside the workspace refused" in result.render()
    assert str(outside) in result.render()
    assert not outside.exists()


@needs_sandbox
def test_relative_escape_and_private_state_are_refused(checker: CorrectnessChecker, workspace: Workspace) -> None:
    result = checker.check(source=HEADER + "open('../escaped.txt', 'w').write('x')\nopen('.ctxmem/results.sqlite', 'w')\n")
    assert result.status == "sandbox_violation"
    assert not (workspace.root.parent / "escaped.txt").exists()
    assert (workspace.state_dir / "results.sqlite").stat().st_size > 0


@needs_sandbox
def test_starting_a_process_is_refused(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("import os\nos.system('true')"))
    assert result.status == "sandbox_violation"
    assert "starting a process refused: os.system" in result.render()


@needs_sandbox
def test_scratch_files_inside_the_workspace_are_allowed(
    checker: CorrectnessChecker, workspace: Workspace, kernel_source: str
) -> None:
    source = kernel_source + "\nwith open('notes.txt', 'w') as _f:\n    _f.write('tile sweep')\n"
    result = checker.check(source=source)
    assert result.passed, result.render()
    # The candidate ran in a private copy of the workspace: its scratch files stay there.
    assert not (workspace.root / "notes.txt").exists()


@needs_sandbox
def test_the_checker_keeps_working_after_a_violation(checker: CorrectnessChecker) -> None:
    bad = checker.check(source=_launch("import socket\nsocket.socket()"))
    assert bad.status == "sandbox_violation"
    assert "network access refused: socket.__new__" in bad.render()
    good = checker.check()
    assert good.passed and good.eval_id == bad.eval_id + 1


@needs_sandbox
def test_an_early_exit_is_reported_as_a_crash(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("import os\nos._exit(3)"))
    assert result.status == "crashed"
    assert "CRASHED: exited with status 3 before reporting a result (0/6 cases finished)" in result.render()


@needs_sandbox
def test_a_segfault_is_reported_as_a_crash(checker: CorrectnessChecker) -> None:
    # A real SIGSEGV without ctypes (which the sandbox refuses, see below).
    result = checker.check(source=_launch("import faulthandler\nfaulthandler._sigsegv()"))
    assert result.status == "crashed"
    assert "CRASHED: killed by SIGSEGV" in result.render()


@needs_sandbox
def test_writing_outside_through_ctypes_libc_is_stopped(checker: CorrectnessChecker, tmp_path: Path) -> None:
    outside = tmp_path / "via_libc.txt"
    source = _launch(
        "import ctypes, os\n"
        "for lib in (lambda: ctypes.CDLL('libc.so.6'), lambda: ctypes.CDLL(None),\n"
        "            lambda: ctypes.pythonapi):\n"
        "    try:\n"
        "        libc = lib()\n"
        f"        fd = libc.open({str(outside).encode()!r}, os.O_WRONLY | os.O_CREAT, 0o644)\n"
        "        libc.write(fd, b'pwned', 5)\n"
        "    except BaseException:\n"
        "        pass  # swallowing the refusal does not hide it\n"
    )
    result = checker.check(source=source)
    assert result.status == "sandbox_violation", result.render()
    kinds = {v["kind"] for v in result.violations}
    assert kinds == {"native code through ctypes"}, result.violations
    assert "ctypes.dlopen('libc.so.6'" in result.render()
    assert any("ctypes.dlsym" in v["detail"] for v in result.violations)  # pythonapi.open
    assert not outside.exists()


@needs_sandbox
def test_a_socket_through_ctypes_is_stopped(checker: CorrectnessChecker) -> None:
    source = _launch(
        "import ctypes\n"
        "try:\n"
        "    libc = ctypes.CDLL('libc.so.6')\n"
        "    fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM\n"
        "    open('fd.txt', 'w').write(str(fd))\n"
        "except BaseException:\n"
        "    pass\n"
    )
    result = checker.check(source=source)
    assert result.status == "sandbox_violation", result.render()
    assert result.violations[0]["kind"] == "native code through ctypes"
    assert not (checker.workspace.root / "fd.txt").exists()


@needs_sandbox
def test_signalling_another_process_is_refused(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_launch("import os\ntry:\n    os.kill(os.getppid(), 0)\n"
                                          "except BaseException:\n    pass"))
    assert result.status == "sandbox_violation"
    assert "signalling another process refused: os.kill" in result.render()


@needs_sandbox
def test_every_result_says_which_layers_were_active(checker: CorrectnessChecker) -> None:
    result = checker.check()
    assert result.passed, result.render()
    layers = result.extra["isolation"]
    assert layers["audit_hook"] == "installed"
    assert layers["seccomp"].startswith("loaded")
    assert layers["environment"] == "allow-list, no secrets"
    if bwrap.probe() is None:  # where bubblewrap can start, it is always used
        assert layers["bwrap"].startswith("user, pid, mount, net, ipc, uts")
        assert "pid_namespace_sweep" in layers and "seccomp_sandbox" in layers


# The OS layer on its own, without the audit hook: raw libc calls in an isolated child.
_ISOLATED_CHILD = """
import ctypes, json, os, socket, sys
from ctxmem.workloads.kernel._runner import isolate


ws, outside, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
report = isolate([ws], [os.path.join(ws, ".ctxmem")])
libc = ctypes.CDLL(None, use_errno=True)
def libc_write(path):
    fd = libc.open(path.encode(), os.O_WRONLY | os.O_CREAT, 0o644)
    return "ok" if fd >= 0 else os.strerror(ctypes.get_errno())
fd = libc.socket(2, 1, 0)
addr = (ctypes.c_ubyte * 16)(2, 0, port >> 8, port & 255, 127, 0, 0, 1)
rc = libc.connect(fd, addr, 16)
connect = "ok" if rc == 0 else os.strerror(ctypes.get_errno())
print(json.dumps({"report": report, "outside": libc_write(outside),
                  "inside": libc_write(os.path.join(ws, "scratch.txt")),
                  "private": libc_write(os.path.join(ws, ".ctxmem", "x")),
                  "connect": connect}))
"""


def test_the_os_layer_stops_raw_libc_writes_and_connections(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".ctxmem").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    with listener:
        proc = subprocess.run([sys.executable, "-c", _ISOLATED_CHILD, str(ws), str(outside),
                               str(port)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    if any(v.startswith("unavailable") for v in got["report"].values()):
        pytest.skip(f"OS isolation not permitted here: {got['report']}")
    assert got["inside"] == "ok"
    assert got["outside"] == "Read-only file system"
    assert got["private"] == "Read-only file system"
    assert got["connect"] == "Network is unreachable"
    assert not outside.exists()
    assert (ws / "scratch.txt").exists()
    # The host's own mounts are untouched.
    probe = tmp_path / "host_can_still_write.txt"
    probe.write_text("x")
