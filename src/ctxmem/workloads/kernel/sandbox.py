"""Run candidate kernel code in a limited child process.

The child is ``python -I _runner.py JOB RESULT`` (see ``_runner.py`` for what happens
inside): a supervisor that forks the candidate's process and a judge. The verdict in
RESULT comes from the judge, a process the candidate never runs in; the candidate's
process only leaves raw output buffers and an account of the run, whose claims of pass or
fail are ignored. This module owns the process boundary:

* **environment** — built from scratch: ``TRITON_INTERPRET=1`` (set before the child can
  import triton), one compute thread, a bounded malloc arena count, and HOME / TMPDIR /
  TRITON_CACHE_DIR inside the workspace's private state folder;
* **limits** — ``resource.setrlimit`` in the child before it executes Python: address space
  (:attr:`SandboxLimits.memory_mb`), CPU seconds, largest file, no core dumps;
* **wall clock** — the supervisor kills the candidate's process group with SIGKILL when
  :attr:`SandboxLimits.timeout_s` passes (and the judge still reports the cases finished by
  then); the supervisor runs in its own session, killed as a whole
  :data:`ONE_SHOT_GRACE_S` later should it hang;
* **working directory** — the workspace root;
* **classification** — the judge's status (``ok``, ``compile_error``, ``error``,
  ``memory_limit``, ``sandbox_violation``) or, when the candidate's process ended without
  one, ``timeout`` or ``crashed`` (with the signal), from that process's exit status (in
  ``RESULT["child"]``, or the warm server's reply) and the stderr tail; a judge that failed
  is ``crashed`` with the harness's error.

Measured need (torch 2.13 CPU + triton 3.9 interpreter, dev and held-out suites): a peak of
about 0.81 GB of address space (VmPeak) and 0.33 GB resident, so the 3 GiB default leaves
room for real kernels while a 20 GB allocation fails at once. The child reports its VmPeak
in every result (``CheckResult.extra``) so the figure can be re-measured.

Inside the child two layers apply (see ``_runner.py``): an OS layer — private network
namespace with no interface up, a mount namespace where everything but the workspace and
the sandbox TMPDIR is read-only, ``PR_SET_NO_NEW_PRIVS`` — which holds even against raw
syscalls; and a ``sys.addaudithook`` hook that refuses and records writes outside the
workspace, sockets, subprocesses, signals to other processes and any ``ctypes`` route to
native code. The hook sees every path to the C level (``socket.create_connection``,
``_socket``, ``os.open``, ``ctypes.CDLL``, …) and cannot be uninstalled by the candidate.
Which layers were in force is reported with every result (``CheckResult.extra["isolation"]``);
where the OS refuses a namespace (no root, no user namespaces) the reason is recorded there
and the hook alone remains.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal[
    "ok", "compile_error", "error", "memory_limit", "sandbox_violation", "timeout", "crashed"
]

RUNNER = Path(__file__).with_name("_runner.py")
_TAIL_BYTES = 8192
# How long past the job's timeout a one-shot supervisor may take (importing torch and
# triton, judging the outputs) before it is killed.
ONE_SHOT_GRACE_S = 60.0


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Limits of one sandboxed run."""

    timeout_s: float = 120.0
    memory_mb: int = 3072
    file_size_mb: int = 64

    @property
    def cpu_s(self) -> int:
        # A backstop for the wall clock; generous because the import alone costs CPU.
        return int(self.timeout_s) + 10


@dataclass(frozen=True, slots=True)
class SandboxOutcome:
    status: Status
    report: dict[str, Any]
    returncode: int | None
    wall_s: float
    stdout_tail: str = ""
    stderr_tail: str = ""
    detail: str = ""


def _child_env(state_dir: Path) -> dict[str, str]:
    home = state_dir / "home"
    tmp = state_dir / "tmp"
    for d in (home, tmp, state_dir / "triton"):
        d.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TMPDIR": str(tmp),
        "TRITON_INTERPRET": "1",
        "TRITON_CACHE_DIR": str(state_dir / "triton"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "LC_ALL": "C.UTF-8",
        # Belt and braces on top of the in-process socket refusal.
        "no_proxy": "*",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }


def _limiter(limits: SandboxLimits) -> Callable[[], None]:
    memory = limits.memory_mb * 2**20
    fsize = limits.file_size_mb * 2**20

    def apply() -> None:  # runs in the child between fork and exec
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # Writing past the file-size limit should fail the write, not kill the child.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - _TAIL_BYTES))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def run_job(
    job: dict[str, Any],
    *,
    workspace_root: Path,
    state_dir: Path,
    limits: SandboxLimits | None = None,
    warm: bool = False,
) -> SandboxOutcome:
    """Run one checker job in the sandbox and classify how it ended.

    ``warm=True`` sends the job to the process-wide warm worker for ``limits``
    (``worker.py``), falling back to a one-shot child when the worker is unavailable.
    """
    limits = limits or SandboxLimits()
    workspace_root = workspace_root.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    job = dict(job)
    job["workspace"] = str(workspace_root)
    job.setdefault("writable", [str(workspace_root)])
    # The candidate may write scratch files in the workspace, but not the checker's state.
    job.setdefault("protected", [str(state_dir)])
    job["writable"] = [*job["writable"], str(state_dir / "tmp")]
    # The supervisor (one-shot or warm) enforces the wall clock on the candidate's process.
    job["timeout_s"] = limits.timeout_s

    with tempfile.TemporaryDirectory(prefix="ctxmem-sandbox-") as scratch:
        scratch_dir = Path(scratch)
        job_path = scratch_dir / "job.json"
        result_path = scratch_dir / "result.json"
        stdout_path = scratch_dir / "stdout.txt"
        stderr_path = scratch_dir / "stderr.txt"
        job_path.write_text(json.dumps(job))
        started = time.monotonic()
        reply = None
        if warm:
            from ctxmem.workloads.kernel.worker import shared_worker

            reply = shared_worker(limits).run(
                job_path=job_path, result_path=result_path, stdout_path=stdout_path,
                stderr_path=stderr_path, env=_child_env(state_dir), cwd=workspace_root,
                timeout_s=limits.timeout_s,
            )
        if reply is not None:
            rc: int | None = reply.returncode
            timed_out = reply.timed_out
        else:
            rc, timed_out = _one_shot(job_path, result_path, stdout_path, stderr_path,
                                      workspace_root, state_dir, limits)
        wall = time.monotonic() - started
        try:
            report = json.loads(result_path.read_text() or "{}")
        except (OSError, ValueError):
            report = {}
        if not isinstance(report, dict):
            report = {}
        child = report.get("child")
        if reply is None and isinstance(child, dict) and not timed_out:
            # One-shot: the supervisor's own exit says little; the candidate's process's does.
            rc, timed_out = int(child.get("returncode", rc or 0)), bool(child.get("timed_out"))
        stdout_tail, stderr_tail = _tail(stdout_path), _tail(stderr_path)
    return _classify(rc, timed_out, report, limits, wall, stdout_tail, stderr_tail)


def _one_shot(job_path: Path, result_path: Path, stdout_path: Path, stderr_path: Path,
              workspace_root: Path, state_dir: Path, limits: SandboxLimits) -> tuple[int | None, bool]:
    """A fresh child for one job: its return code and whether it was killed on timeout."""
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(RUNNER), str(job_path), str(result_path)],
            cwd=workspace_root,
            env=_child_env(state_dir),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            preexec_fn=_limiter(limits),
            start_new_session=True,
        )
        timed_out = False
        try:
            # The supervisor kills the candidate's process at timeout_s itself; this is the
            # backstop for the supervisor (its import, the judge) hanging.
            proc.wait(timeout=limits.timeout_s + ONE_SHOT_GRACE_S)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        else:
            # Nothing the candidate started may outlive the check.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, timed_out


def _classify(rc: int | None, timed_out: bool, report: dict[str, Any], limits: SandboxLimits,
              wall: float, stdout_tail: str, stderr_tail: str) -> SandboxOutcome:
    reported = report.get("status")
    status: Status
    detail = ""
    if isinstance(report.get("harness_error"), str):
        # The judge itself failed: a harness bug, never the candidate's pass.
        status = "crashed"
        detail = "the harness could not judge this run: " + report["harness_error"][-500:]
    elif timed_out:
        status = "timeout"
        detail = f"killed after {limits.timeout_s:g}s wall clock"
    elif reported in ("ok", "compile_error", "error", "memory_limit", "sandbox_violation"):
        status = reported
    elif rc is not None and rc < 0 and -rc == signal.SIGXCPU:
        status = "timeout"
        detail = f"CPU time limit ({limits.cpu_s}s) exceeded"
    elif any(m in stderr_tail for m in ("MemoryError", "bad_alloc", "can't allocate memory")):
        status = "memory_limit"
        detail = f"ran out of its {limits.memory_mb} MiB address-space limit"
    else:
        status = "crashed"
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name
            detail = f"killed by {name}"
            if -rc == signal.SIGSEGV:
                detail += " (an out-of-bounds access the interpreter could not survive?)"
        else:
            detail = f"exited with status {rc} before reporting a result"
    return SandboxOutcome(
        status=status,
        report=report,
        returncode=rc,
        wall_s=round(wall, 3),
        stdout_tail=stdout_tail,
        stderr_tail=stderr_tail,
        detail=detail,
    )
