"""Run untrusted kernel code in a bubblewrap sandbox; judge it from outside.

The kernel workload runs code an agent wrote — with an LLM policy, code from a model
acting on tool output. It must never reach the user's secrets, the harness's state or the
host, and it must never be able to forge its own verdict.

Public API
----------
:func:`run_job`
    One correctness job (``correctness.py`` builds it): the candidate runs on every case
    inside the sandbox and leaves raw buffers; the judge (``judge.py``) compares them in
    this process, outside the sandbox. Returns a :class:`SandboxOutcome` whose ``status``
    is the judge's (``ok``, ``compile_error``, ``error``, ``memory_limit``,
    ``sandbox_violation``) or, when the candidate's process ended without one, ``timeout``
    or ``crashed``; ``unavailable`` when no sandbox can start here (see below).
:func:`run_in_sandbox`
    ``run_in_sandbox(entry, job, *, workspace, limits, source=None) -> SandboxOutcome``
    runs *trusted* ctxmem code — ``entry`` is ``"package.module:function"`` — inside the
    same sandbox, after every layer below is in force, with a fresh copy of the workspace
    as its working directory. ``job`` (JSON-able) is passed to the function, plus
    ``job["workspace"]`` (the copy) and, when ``source`` is given, ``job["source_path"]``
    (that text as ``candidate.py``). The function returns a JSON-able value, found in
    ``outcome.report["result"]``. The function runs in the same process as any candidate
    code it loads, so **its result is untrusted**: the caller validates it and must not
    let a number in it turn a failure into a success. Raises
    :class:`SandboxUnavailableError` where no sandbox can start.

Layers, and the test that proves each (in ``tests/workloads/kernel/``; ``A`` is
``test_attacks.py``, ``F`` is ``test_attacks_files.py``)
------------------------------------------------------------------------------------------
1. **bubblewrap** (``bwrap.py``): fresh user, PID, mount, network, IPC, UTS and cgroup
   namespaces; uid/gid 65534 with no capabilities and no further user namespaces; a root
   of read-only binds of exactly the Python runtime, site-packages, ``/usr`` and the ctxmem
   package, itself read-only; ``/tmp`` a private read-only tmpfs; ``/proc`` of its own PID
   namespace only; ``/dev`` minimal and read-only (its ``/dev/shm`` would otherwise outlive
   a check); one writable folder, ``/box``, holding a fresh folder per check with a
   copy of the workspace (never ``.ctxmem``).
   A: ``test_namespaces_uid_capabilities_and_host_view`` (uid, CapEff 0, NoNewPrivs,
   seccomp mode, hostname; host files, the real workspace, the cache and its key
   unreadable; writes to host paths, ``/usr``, ``/tmp``, ``/`` refused; no connection to
   a listener on the host's 127.0.0.1), ``test_torch_from_file_shared``.
2. **seccomp**, twice (``_seccomp.py``): a sandbox-wide BPF program passed to
   ``bwrap --seccomp`` (ptrace, process_vm_*, mount, setns, unshare, keyctl, bpf, … refused
   for every process, the zygote included), and a per-check filter loaded in the child
   before candidate code, under which exec, any new process, signals to other processes
   and the calls above kill the process (reported as a sandbox violation); sockets,
   ``memfd_create`` and System V shared memory, queues and semaphores answer ``EACCES``
   (memory outside the address-space limit, or left behind in the box's IPC namespace).
   A: ``test_nsenter_through_posixsubprocess_is_contained``,
   ``test_setsid_survivor_does_not_outlive_the_check``,
   ``test_unsandboxed_fallback_still_refuses_the_hook_only_escapes``.
3. **the whole PID namespace ends with the check**: after each check the zygote kills
   every process left in the namespace but itself — it is the namespace's init, so its
   death ends them all — (and says how many, a
   violation); a box that stops answering is killed whole (``--die-with-parent`` if the
   harness dies). A: ``test_the_sweep_kills_every_leftover_process_of_the_namespace``,
   ``test_setsid_survivor_does_not_outlive_the_check``.
4. **no secrets inside** (:func:`~ctxmem.workloads.kernel.bwrap.sandbox_env`): the environment is an allow-list — paths,
   thread counts, ``TRITON_INTERPRET=1``, locale, dead proxies — built from constants, so no
   ``*_API_KEY``, token or proxy credential; bwrap itself runs with it; the harness's
   process is in no namespace the sandbox can see, and the zygote is not dumpable.
   A: ``test_proc_through_dir_fd_shows_no_secret_and_no_harness`` (environ, cmdline and
   memory of every visible process, through a ``/proc`` directory descriptor, with keys
   planted in the harness's environment), ``test_planted_api_keys_never_reach_any_tool_output``
   (check, compile and submit output and the result cache).
5. **the judge is outside** (``judge.py``): it computes the expected outputs itself and
   reads the candidate's files through a descriptor of the check folder opened before the
   run, with ``O_NOFOLLOW``, regular files with one link only, sizes bounded.
   ``test_kernel_verdict_integrity.py``; A: ``test_symlinked_or_hard_linked_outputs_are_not_followed``.
6. **the audit hook's refusals are recorded where the candidate cannot erase them**: the
   hook writes each one to a pipe the zygote drains (the child holds only the write end),
   and the harness merges that record into the verdict. A:
   ``test_a_refusal_cannot_be_erased_from_the_record``. This records what the hook
   refuses, not every refusal: see layer 8 for how a candidate can switch the hook off.
7. **the result cache is outside and authenticated** (``correctness.ResultCache``): it lives
   in the real workspace's ``.ctxmem`` (never in the sandbox's view), every row carries an
   HMAC-SHA256 under a key kept outside the workspace, and ``submit`` recomputes anyway.
   A: ``test_forged_pass_row_in_the_cache_is_ignored``, ``test_forged_cache_row_does_not_survive_submit``,
   ``test_sqlite3_connect_to_the_cache_cannot_forge_a_pass``.
8. **the audit hook** (``_runner.Sandbox``), a second layer that sees the candidate's
   Python: refused writes, directory descriptors outside the check folder, ``..`` relative
   to a ``dir_fd``, hard links, databases outside, ``/proc`` of other processes, sockets,
   processes, ``ctypes``. ``test_kernel_sandbox.py``; A: ``test_os_open_with_dir_fd``,
   ``test_os_link_with_src_dir_fd``, ``test_proc_dir_fd_is_refused_by_the_hook_too``.
   It runs in the candidate's own process, so it is a tripwire and a reporter, not a
   boundary: a correctness check runs any Python (no source screen), and a candidate that
   walks its frames (``sys._getframe().f_back``) to the harness's objects, or patches the
   functions the hook calls, switches it off. Then layers 1–3 still refuse everything the
   hook would have (each attempt is held to them with the hook off in
   ``test_with_the_hook_switched_off_the_os_layers_still_refuse``), but the refusals come
   back as plain errors (``EROFS``, ``EACCES``), not as recorded violations. SIMX pricing
   screens its source first (``instrument.screen_source``: no imports but torch and
   triton, no private or frame attributes), which closes these routes for the measured run.
9. **limits**: address space (:attr:`SandboxLimits.memory_mb`), CPU seconds, largest file,
   no core dumps, set in the child; the wall clock is enforced by the zygote, and by the
   harness on the zygote. ``test_kernel_sandbox.py``, ``test_kernel_worker.py``.
10. **the file tools** (``workspace.py``): every component opened ``O_NOFOLLOW`` under the
    root, hard-linked files and ``.ctxmem`` refused. F: every test.

Where bubblewrap cannot start (not installed, no user namespaces), untrusted code does
not run: :func:`run_job` returns ``unavailable`` with the reason and the way out, and
:func:`run_in_sandbox` raises :class:`SandboxUnavailableError` — unless the user sets
``CTXMEM_KERNEL_ALLOW_UNSANDBOXED=1`` (or passes ``allow_unsandboxed=True``), naming the
risk: then the zygote runs as a plain child process and only the older in-process OS layer
(``_runner.isolate``, where the OS permits it), the per-check seccomp filter and the audit
hook stand between the candidate and the host. A: ``test_without_bwrap_nothing_runs_unless_allowed``,
``test_unsandboxed_fallback_still_refuses_the_hook_only_escapes``.

What is not covered, said plainly: disk use is bounded per file (the file-size limit) and
by the wall clock, not by a quota, so a check can fill the host's temporary folder until
it is killed; when the harness runs as root, the sandbox's uid 65534 maps to the host's
uid 0 for the ownership of files in ``/box`` (it has no capability anywhere, and every
other bind is read-only); only values are judged, so a candidate that computes the right
answer without a Triton kernel passes the check (SIMX pricing screens for that, see
``instrument.py``); the judge keeps the candidate's own account of *which* failure to
show, never whether it failed.

Measured need (torch 2.13 CPU + triton 3.9 interpreter): a peak of about 0.81 GB of
address space and 0.33 GB resident per check, so the 3 GiB default leaves room for real
kernels while a 20 GB allocation fails at once.
"""

from __future__ import annotations

import json
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, Literal

from ctxmem.errors import CtxmemError
from ctxmem.workloads.kernel import bwrap
from ctxmem.workloads.kernel.worker import Box, BoxError, CheckFolder, WorkerReply, shared_box

Status = Literal[
    "ok", "compile_error", "error", "memory_limit", "sandbox_violation", "timeout", "crashed",
    "unavailable",
]
ALLOW_UNSANDBOXED_ENV = "CTXMEM_KERNEL_ALLOW_UNSANDBOXED"
_TAIL_BYTES = 8192
_REPORT_BYTES = 4 << 20
# What the copy of the workspace leaves out: the harness's private state, git objects and
# byte-code caches; and a bound on what is copied.
_COPY_SKIP = frozenset({".ctxmem", ".git", "__pycache__"})
_COPY_MAX_BYTES = 64 << 20


class SandboxUnavailableError(CtxmemError):
    """No sandbox can start here, and running unsandboxed was not allowed."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(unavailable_message(reason))


def unavailable_message(reason: str) -> str:
    return (f"kernel code was not run: the sandbox cannot start here ({reason}). Install "
            f"bubblewrap on a host with user namespaces, or set {ALLOW_UNSANDBOXED_ENV}=1 to "
            "run agent-written code WITHOUT the OS sandbox (it can then read your files and "
            "environment)")


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


def sandbox_mode(allow_unsandboxed: bool | None = None) -> tuple[bool, str | None]:
    """(sandboxed, reason bwrap cannot start); raises when neither is possible nor allowed.

    The seccomp filter is needed either way (the child always loads it).
    """
    from ctxmem.workloads.kernel import _seccomp

    missing = _seccomp.unavailable()
    if missing is not None:
        raise SandboxUnavailableError(missing)
    reason = bwrap.probe()
    if reason is None:
        return True, None
    allowed = allow_unsandboxed if allow_unsandboxed is not None else \
        os.environ.get(ALLOW_UNSANDBOXED_ENV, "") == "1"
    if not allowed:
        raise SandboxUnavailableError(reason)
    return False, reason


def _layers(sandboxed: bool, reason: str | None) -> dict[str, str]:
    if sandboxed:
        return {"bwrap": "user, pid, mount, net, ipc, uts, cgroup namespaces; uid 65534, no "
                         "capabilities; read-only runtime binds; own /proc; private /tmp",
                "seccomp_sandbox": "bwrap --seccomp: ptrace, mount, setns, unshare, keyctl, "
                                   "bpf refused for every process",
                "environment": "allow-list, no secrets",
                "pid_namespace_sweep": "every leftover process killed after each check"}
    return {"bwrap": f"off: {reason} ({ALLOW_UNSANDBOXED_ENV}=1)",
            "environment": "allow-list, no secrets"}


# -- reading what the candidate left -------------------------------------------------------


def open_box_file(folder: CheckFolder, name: str) -> IO[bytes] | None:
    """``name`` in the check folder as a binary file: a regular file with one link, never
    through a link; ``None`` otherwise (missing, a symlink, a hard link, a folder, …)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=folder.fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        return None
    return os.fdopen(fd, "rb")


def read_box_file(folder: CheckFolder, name: str, limit: int = _REPORT_BYTES) -> bytes | None:
    f = open_box_file(folder, name)
    if f is None:
        return None
    with f:
        return f.read(limit)


def _tail_of(folder: CheckFolder, name: str) -> str:
    f = open_box_file(folder, name)
    if f is None:
        return ""
    with f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - _TAIL_BYTES))
        return f.read(_TAIL_BYTES).decode("utf-8", "replace")


def _json_of(folder: CheckFolder, name: str) -> Any:
    data = read_box_file(folder, name)
    try:
        return json.loads(data) if data else {}
    except (ValueError, RecursionError):
        return {}


def copy_workspace(root: Path, dest: Path) -> None:
    """Copy the workspace's regular files into ``dest``, never following a link.

    Leaves out ``.ctxmem`` (the harness's state: result cache, key material), ``.git`` and
    ``__pycache__``, symlinks, hard-linked files and anything past 64 MiB in total.
    """
    budget = [_COPY_MAX_BYTES]
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _copy_dir(top, dest, budget)
    finally:
        os.close(top)


def _copy_dir(dir_fd: int, dest: Path, budget: list[int]) -> None:
    for entry in sorted(os.listdir(dir_fd)):
        if entry in _COPY_SKIP:
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dir_fd)
        except OSError:
            continue  # a symlink (ELOOP) or unreadable
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                (dest / entry).mkdir()
                _copy_dir(fd, dest / entry, budget)
            elif stat.S_ISREG(st.st_mode) and st.st_nlink == 1 and st.st_size <= budget[0]:
                budget[0] -= st.st_size
                with os.fdopen(os.dup(fd), "rb") as src, (dest / entry).open("wb") as out:
                    out.write(src.read(st.st_size))
        finally:
            os.close(fd)


# -- running ---------------------------------------------------------------------------------


def _box(warm: bool, allow_unsandboxed: bool | None) -> tuple[Box, bool]:
    sandboxed, reason = sandbox_mode(allow_unsandboxed)
    box = shared_box(sandboxed=sandboxed) if warm else Box(sandboxed=sandboxed)
    box.layers = _layers(sandboxed, reason)
    return box, not warm


def _request(kind: str, folder: CheckFolder, sandboxed: bool, limits: SandboxLimits,
             entry: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {
        "kind": kind, "env": bwrap.sandbox_env(folder.inside), "isolate": not sandboxed,
        "limits": {"memory": limits.memory_mb * 2**20, "fsize": limits.file_size_mb * 2**20,
                   "cpu_s": limits.cpu_s},
    }
    if entry is not None:
        request["entry"] = entry
    return request


def run_job(
    job: dict[str, Any],
    *,
    workspace_root: Path,
    limits: SandboxLimits | None = None,
    warm: bool = False,
    allow_unsandboxed: bool | None = None,
) -> SandboxOutcome:
    """Run one checker job in the sandbox, judge it here, and classify how it ended.

    ``job["source"]`` is the candidate's text; ``job["display_name"]`` the name its
    tracebacks show. ``warm=True`` uses the process-wide box for ``limits``; otherwise a
    fresh box is started and stopped for this job (same code path, same results).
    """
    limits = limits or SandboxLimits()
    try:
        box, one_shot = _box(warm, allow_unsandboxed)
    except SandboxUnavailableError as exc:
        return SandboxOutcome(status="unavailable", report={}, returncode=None, wall_s=0.0,
                              detail=str(exc))
    job = dict(job)
    source = job.pop("source")

    def prepare(folder: CheckFolder) -> None:
        copy_workspace(workspace_root, folder.host / "ws")
        (folder.host / "candidate.py").write_text(source)
        inside = {**job, "source_path": f"{folder.inside}/candidate.py",
                  "workspace": f"{folder.inside}/ws", "writable": [folder.inside],
                  "protected": []}
        (folder.host / "job.json").write_text(json.dumps(inside))

    def collect(folder: CheckFolder, reply: WorkerReply | None) -> SandboxOutcome:
        from ctxmem.workloads.kernel.judge import judge

        torch = _torch()
        raw_report = _json_of(folder, "report.json")
        outputs = open_box_file(folder, "outputs.bin")
        # Small tensors: one thread. torch's default pool costs ~10 ms per op here when
        # the cores are busy (measured: 5.5 s -> 0.1 s of judging for three checks).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            report = judge(torch, job, _EXPECTED.get(torch, job), raw_report, outputs)
        finally:
            torch.set_num_threads(threads)
            if outputs is not None:
                outputs.close()
        return _outcome(box, reply, report, folder, limits, one_shot)

    try:
        return _execute(box, "check", None, limits, prepare, collect)
    except BoxError as exc:
        return SandboxOutcome(status="crashed", report={}, returncode=None, wall_s=0.0,
                              detail=str(exc))
    finally:
        if one_shot:
            box.close()


def _execute(box: Box, kind: str, entry: str | None, limits: SandboxLimits,
             prepare: Callable[[CheckFolder], None],
             collect: Callable[[CheckFolder, WorkerReply | None], SandboxOutcome],
             *, audit_hook: bool = True) -> SandboxOutcome:
    def make_request(folder: CheckFolder) -> dict[str, Any]:
        prepare(folder)
        request = _request(kind, folder, box.sandboxed, limits, entry)
        request["audit_hook"] = audit_hook
        return request

    return box.execute(make_request, collect, timeout_s=limits.timeout_s)


_TORCH: Any = None


def _torch() -> Any:
    global _TORCH
    if _TORCH is None:
        import torch

        _TORCH = torch
    return _TORCH


class _Memo:
    def __init__(self) -> None:
        self._impl: Any = None

    def get(self, torch: Any, job: dict[str, Any]) -> Any:
        if self._impl is None:
            from ctxmem.workloads.kernel.judge import ExpectedOutputs

            self._impl = ExpectedOutputs()
        return self._impl.get(torch, job)


_EXPECTED = _Memo()


def _outcome(box: Box, reply: WorkerReply | None, report: dict[str, Any], folder: CheckFolder,
             limits: SandboxLimits, one_shot: bool) -> SandboxOutcome:
    report = dict(report)
    # A warm box imported torch and triton before this request (0.0); a one-shot box did
    # it for this request only.
    report["import_seconds"] = box.import_seconds if one_shot else 0.0
    claimed = report.get("isolation")
    claimed = claimed if isinstance(claimed, dict) else {}
    # What the harness knows by construction, then what the child says it added.
    report["isolation"] = {**box.layers,
                           **{k: v for k, v in claimed.items() if k not in box.layers}}
    stdout_tail, stderr_tail = _tail_of(folder, "stdout.txt"), _tail_of(folder, "stderr.txt")
    if reply is None:
        return SandboxOutcome(status="crashed", report=report, returncode=None,
                              wall_s=limits.timeout_s, stdout_tail=stdout_tail,
                              stderr_tail=stderr_tail,
                              detail="the sandbox stopped answering and was killed")
    report["child"] = {"returncode": reply.returncode, "timed_out": reply.timed_out,
                       "wall_s": reply.wall_s}
    # What the zygote saw is the record; the candidate's own report can only add to it.
    seen = list(reply.violations)
    if reply.flooded:
        seen.append({"kind": "flooding the harness's violation channel", "detail": "1 MiB or more"})
    if reply.leftovers_killed:
        seen.append({"kind": "process outlived the check",
                     "detail": f"{reply.leftovers_killed} process(es) killed after the check"})
    claimed = report.get("violations")
    report["violations"] = seen + [v for v in (claimed if isinstance(claimed, list) else [])
                                   if v not in seen]
    outcome = classify(reply.returncode, reply.timed_out, report, limits, reply.wall_s,
                       stdout_tail, stderr_tail)
    if seen and outcome.status in ("ok", "error", "compile_error", "crashed"):
        # A refused action the candidate tried to hide (or swallowed) voids the check.
        return replace(outcome, status="sandbox_violation")
    return outcome


def run_in_sandbox(entry: str, job: dict[str, Any], *, workspace: Path,
                   limits: SandboxLimits | None = None, source: str | None = None,
                   warm: bool = True, allow_unsandboxed: bool | None = None,
                   audit_hook: bool = True) -> SandboxOutcome:
    """Run trusted ``module:function`` on ``job`` inside the sandbox (see the module docstring).

    ``outcome.report`` holds ``result`` (the function's return value, untrusted),
    ``status``, ``error`` (when it raised), ``violations`` and ``isolation``.
    ``audit_hook=False`` leaves the in-process hook out, so that what the function
    observes is the OS layers' doing alone (``probe.survey`` and the attack tests).
    """
    if ":" not in entry:
        raise ValueError(f"entry {entry!r} must be 'package.module:function'")
    limits = limits or SandboxLimits()
    box, one_shot = _box(warm, allow_unsandboxed)

    def prepare(folder: CheckFolder) -> None:
        copy_workspace(Path(workspace), folder.host / "ws")
        inside = {**job, "workspace": f"{folder.inside}/ws"}
        if source is not None:
            (folder.host / "candidate.py").write_text(source)
            inside["source_path"] = f"{folder.inside}/candidate.py"
        (folder.host / "job.json").write_text(json.dumps(inside))

    def collect(folder: CheckFolder, reply: WorkerReply | None) -> SandboxOutcome:
        raw = _json_of(folder, "result.json")
        report: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if report.get("status") not in ("ok", "error", "memory_limit", "sandbox_violation"):
            report.pop("status", None)
        return _outcome(box, reply, report, folder, limits, one_shot)

    try:
        return _execute(box, "entry", entry, limits, prepare, collect, audit_hook=audit_hook)
    except BoxError as exc:
        return SandboxOutcome(status="crashed", report={}, returncode=None, wall_s=0.0,
                              detail=str(exc))
    finally:
        if one_shot:
            box.close()


def classify(rc: int | None, timed_out: bool, report: dict[str, Any], limits: SandboxLimits,
             wall: float, stdout_tail: str, stderr_tail: str) -> SandboxOutcome:
    """How a run ended, from the judge's report and the child's exit status."""
    reported = report.get("status")
    status: Status
    detail = ""
    if isinstance(report.get("harness_error"), str):
        status = "crashed"
        detail = "the harness could not judge this run: " + report["harness_error"][-500:]
    elif timed_out:
        status = "timeout"
        detail = f"killed after {limits.timeout_s:g}s wall clock"
    elif rc is not None and rc < 0 and -rc == signal.SIGSYS:
        status = "sandbox_violation"
        report.setdefault("violations", []).append(
            {"kind": "forbidden system call",
             "detail": "the seccomp filter killed the process (SIGSYS): exec, a new process, "
                       "a signal to another process, ptrace, mount, setns, unshare or keyctl"})
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
            detail = f"killed by {signal.Signals(-rc).name}"
            if -rc == signal.SIGSEGV:
                detail += " (an out-of-bounds access the interpreter could not survive?)"
        else:
            detail = f"exited with status {rc} before reporting a result"
    return SandboxOutcome(status=status, report=report, returncode=rc, wall_s=round(wall, 3),
                          stdout_tail=stdout_tail, stderr_tail=stderr_tail, detail=detail)
