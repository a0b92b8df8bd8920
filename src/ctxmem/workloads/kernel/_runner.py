"""The sandboxed side of the correctness checker. Run as a script, never imported by ctxmem.

``python -I _runner.py JOB.json RESULT.json`` (one-shot) and ``python -I _runner.py --serve``
(the warm worker, see ``worker.py``) run the same :func:`supervise` per job. The parent
(``sandbox.py``) has already set the resource limits (address space, CPU time, file size)
and the environment (``TRITON_INTERPRET=1`` before anything imports triton, one thread, a
private HOME/TMPDIR). This script only needs the standard library, torch and triton: it
must not import ctxmem, so the candidate cannot reach the library's state.

Three processes per job, and the verdict never comes from the one the candidate runs in:

* **the supervisor** (the one-shot process, or the warm server) imports torch and triton
  once and never loads candidate code, never computes an expected output. Per job it opens
  two files for the candidate's process (``RESULT.report``, ``RESULT.outputs``), forks it,
  then forks the judge, kills the candidate's process group when it overruns its wall
  clock, tells the judge how the candidate's process ended, and waits for the judge;
* **the candidate's process** (:func:`candidate_main`) applies the OS layer, builds the
  inputs with the pristine reference (from the package, not the workspace copy the agent
  can edit), installs the audit hook, loads the candidate and runs it on each case with
  NaN guard bands around every buffer. It compares nothing: after each case it writes the
  raw buffers as the candidate left them — the output *and* every input, guard bands
  included — to ``RESULT.outputs`` (a length-prefixed JSON header naming the case and each
  buffer's dtype and size, then the bytes), and its account of the run (how far it got,
  the exception, refused actions, memory figures) to ``RESULT.report``;
* **the judge** (:func:`judge`) is forked *after* the candidate's process, so nothing it
  computes was ever in that process's memory. It computes the expected outputs while the
  candidate runs, then reads the raw buffers, checks every header against the job (case,
  buffer names, dtypes, sizes), and does the whole comparison itself: tolerances, NaNs,
  guard-band (out-of-bounds) writes, bit-exact input buffers. It writes ``RESULT.json``.
  Of the report it keeps only plain strings and numbers about what went wrong; any claim
  of pass or fail there is ignored, a status of ``ok`` stands only if every case's buffers
  are present and well formed, and outputs that are missing, truncated, malformed or run
  past the last case are an ``error`` (``OutputError``) with a message saying which.

So a candidate may write anything to the descriptors it inherits (``os.write`` to its
report or outputs), patch torch or the runner's own functions, or search its process's
objects with ``gc``: the expected outputs are not there, and the judge does not run its
code. To pass, the buffers must hold the right numbers. The warm server's request and
reply pipes are closed in both children.

Two layers stand between the candidate and the machine, and every result says which of
them were active (``result["isolation"]``):

* **the OS layer** (:func:`isolate`, applied first thing in the candidate's process while it
  is still single-threaded): a private network namespace, which has no interface but a
  downed loopback, so no connection can be made even through raw syscalls; a private
  mount namespace in which every mount is read-only except bind mounts of the workspace and
  the sandbox's TMPDIR (and the harness's private state inside the workspace stays
  read-only); and ``PR_SET_NO_NEW_PRIVS``. Each step needs privileges (root, or
  unprivileged user namespaces); when one is refused, the reason is recorded and the check
  still runs;
* **the audit hook** (``Sandbox``): refuses, and records, file writes outside the workspace,
  sockets, starting processes, signalling other processes, opening ``/proc/<pid>/…`` of any
  other process (the judge's ``mem`` among them) or this process's raw memory, and every
  use of ``ctypes`` that could reach native code (``dlopen``/``dlsym``, calling a foreign
  function, reading or writing raw memory). It sees the candidate's Python, so it reports
  *what* was tried even where the OS layer would have stopped it anyway.

What is still not covered: the judge trusts the candidate's report for *which* failure to
show (a forged report can hide a refused action or change an error message, never turn a
failure into a pass); restoring an input it overwrote is indistinguishable from never
having touched it; a candidate that computes the right answer some other way (calling the
reference or plain torch rather than a Triton kernel) passes, since only values are
checked; the judge's memory is protected by the audit hook and by its being a separate
process, not by dropping ``CAP_SYS_PTRACE`` (a native-code escape past the hook, as root,
could still read it); and a path-bound Unix socket is reachable through the read-only
mounts if ``ctypes`` is ever let through. Memory, CPU and wall-clock limits are set by the
parent (``sandbox.py``); the raw outputs of a job must fit its file-size limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib.util
import json
import os
import struct
import sys
import time
import traceback
from types import ModuleType
from typing import IO, Any

MEMORY_MARKERS = ("can't allocate memory", "DefaultCPUAllocator", "bad_alloc", "out of memory")
PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
     "os.forkpty", "pty.spawn", "os.startfile"}
)
# Events whose first argument is a path the candidate modifies.
PATH_EVENTS = frozenset(
    {"os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
     "os.symlink", "os.link", "os.rename", "shutil.rmtree", "os.chflags", "os.lchflags"}
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# ctypes events that reach native code or raw memory: loading a library or symbol, calling
# a foreign function, and building objects over arbitrary addresses.
CTYPES_EVENTS = frozenset(
    {"ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function",
     "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.string_at", "ctypes.wstring_at",
     "ctypes.addressof"}
)
SIGNAL_EVENTS = frozenset({"os.kill", "os.killpg", "signal.pthread_kill"})

# Linux constants (include/uapi/linux/sched.h, mount.h, prctl.h); the syscall number of
# mount_setattr is 442 on every architecture (it was added after the tables were unified).
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
SYS_MOUNT_SETATTR = 442
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
MOUNT_ATTR_RDONLY = 1
PR_SET_NO_NEW_PRIVS = 38


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)} ({errno.errorcode.get(err, err)})")


def _mount(libc: Any, source: str | None, target: str, flags: int) -> None:
    _check(libc.mount(source and os.fsencode(source), os.fsencode(target), None,
                      ctypes.c_ulong(flags), None), f"mount {target}")


def _all_read_only(libc: Any) -> str:
    """Make every mount in this (private) namespace read-only; say how."""
    attr = _MountAttr(attr_set=MOUNT_ATTR_RDONLY)
    rc = libc.syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), b"/",
                      ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr),
                      ctypes.c_size_t(ctypes.sizeof(attr)))
    if rc == 0:
        return "mount_setattr"
    # Older kernels: remount each mount point read-only, parents first.
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in points:
        point = point.encode().decode("unicode_escape")  # \040 and friends
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        with contextlib.suppress(OSError):
            flags |= os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        with contextlib.suppress(OSError):
            _mount(libc, None, point, flags)
    return "remount"


def isolate(writable: list[str], protected: list[str]) -> dict[str, str]:
    """Cut this process off at the OS level; return ``{layer: what happened}``.

    Must run while the process has a single thread (``CLONE_NEWUSER`` demands it, and the
    namespaces of other threads would not change). Every step degrades on its own: the
    value of each layer is either what is in force or ``"unavailable: <reason>"``.
    """
    report: dict[str, str] = {}
    libc = _libc()
    if libc.unshare(ctypes.c_int(CLONE_NEWNET)) == 0:
        report["network"] = "private network namespace (no interfaces up)"
    else:
        first = os.strerror(ctypes.get_errno())
        # Unprivileged: a user namespace grants the capabilities for the others.
        if libc.unshare(ctypes.c_int(CLONE_NEWUSER | CLONE_NEWNET)) == 0:
            report["network"] = "private network namespace (no interfaces up), in a user namespace"
        else:
            report["network"] = (f"unavailable: unshare(CLONE_NEWNET): {first}; with "
                                 f"CLONE_NEWUSER: {os.strerror(ctypes.get_errno())}")
    try:
        _check(libc.unshare(ctypes.c_int(CLONE_NEWNS)), "unshare(CLONE_NEWNS)")
        # Nothing done from here on may propagate back to the host's mounts.
        _mount(libc, None, "/", MS_REC | MS_PRIVATE)
        how = _all_read_only(libc)
        # Deeper paths last, so the workspace's private state (read-only) sits on the
        # writable workspace, and the sandbox's TMPDIR (writable) on the private state.
        modes = {os.path.realpath(p): True for p in writable if os.path.isdir(p)}
        modes.update({os.path.realpath(p): False for p in protected if os.path.isdir(p)})
        for path in sorted(modes, key=lambda p: (p.count(os.sep), p)):
            _mount(libc, path, path, MS_BIND | MS_REC)
            flags = MS_REMOUNT | MS_BIND | (0 if modes[path] else MS_RDONLY)
            flags |= os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _mount(libc, None, path, flags)
        writable_now = sorted(p for p, w in modes.items() if w)
        report["filesystem"] = (f"read-only mount namespace ({how}); writable: "
                                + ", ".join(writable_now))
    except OSError as exc:
        report["filesystem"] = f"unavailable: {exc}"
    if libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0)) == 0:
        report["no_new_privs"] = "set"
    else:
        report["no_new_privs"] = f"unavailable: {os.strerror(ctypes.get_errno())}"
    return report


class SandboxViolation(PermissionError):
    pass


class Sandbox:
    def __init__(self, writable: list[str], protected: list[str]) -> None:
        self.writable = [os.path.realpath(p) for p in writable]
        self.protected = [os.path.realpath(p) for p in protected]
        self.active = False
        self.violations: list[dict[str, str]] = []

    def _allowed(self, path: Any) -> bool:
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        if real == os.devnull:
            return True

        def under(roots: list[str]) -> bool:
            return any(real == r or real.startswith(r + os.sep) for r in roots)

        return under(self.writable) and not under(self.protected)

    def _check_proc(self, path: Any) -> None:
        """Refuse ``/proc/<pid>/…`` of any other process, and raw memory of this one.

        The judge (a sibling process) holds the expected outputs; as root, or with
        ``ptrace_scope`` 0, its ``/proc/<pid>/mem`` would be readable with a plain open().
        """
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        parts = real.split(os.sep)
        if len(parts) < 3 or parts[1] != "proc" or not parts[2].isdigit():
            return
        if int(parts[2]) != os.getpid():
            self._refuse("reading another process", real)
        if parts[-1] in ("mem", "pagemap", "environ", "auxv"):
            self._refuse("reading raw process memory", real)

    def _refuse(self, kind: str, detail: str) -> None:
        self.violations.append({"kind": kind, "detail": detail})
        raise SandboxViolation(f"sandbox: {kind} refused: {detail}")

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            self._check_proc(path)
            writing = bool(flags & _WRITE_FLAGS) if isinstance(flags, int) else (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if writing and not self._allowed(path):
                self._refuse("file write outside the workspace", os.fsdecode(path))
        elif event in PATH_EVENTS:
            targets = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
            for target in targets[: 2 if event in ("os.rename", "os.symlink", "os.link") else 1]:
                if not self._allowed(target):
                    self._refuse(f"{event} outside the workspace", os.fsdecode(target))
        elif event.startswith("socket."):
            self._refuse("network access", f"{event}{args[1:3] if event == 'socket.__new__' else args}")
        elif event in PROCESS_EVENTS:
            self._refuse("starting a process", event)
        elif event in CTYPES_EVENTS:
            self._refuse("native code through ctypes", f"{event}{_brief(args)}")
        elif event in SIGNAL_EVENTS:
            pid = args[0] if event != "signal.pthread_kill" else None
            if event == "signal.pthread_kill" or pid not in (0, os.getpid()):
                self._refuse("signalling another process", f"{event}{_brief(args)}")


def _brief(args: tuple[Any, ...]) -> str:
    text = repr(tuple(a if isinstance(a, str | bytes | int | None) else type(a).__name__
                      for a in args))
    return text[:200]


def _is_memory_error(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(m in text for m in MEMORY_MARKERS)


def _exception_info(exc: BaseException, source_file: str, display: str) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)
    # Start the traceback at the candidate's code: the runner's own frames are noise.
    while frames and frames[0].filename == __file__:
        frames = traceback.StackSummary.from_list(frames[1:])
    text = "".join(["Traceback (most recent call last):\n", *traceback.format_list(frames),
                    *traceback.format_exception_only(type(exc), exc)])
    text = text.replace(source_file, display)
    for prefix in sorted({p for p in sys.path if p.endswith("-packages")}, key=len, reverse=True):
        text = text.replace(prefix + os.sep, "")
    tail = text.rstrip("\n").splitlines()[-14:]
    # The innermost frame in the candidate's file: where the agent should look.
    where = None
    for frame in frames:
        if frame.filename == source_file:
            where = {"line": frame.lineno, "function": frame.name, "code": frame.line}
    return {
        "type": type(exc).__name__,
        "message": str(exc).replace(source_file, display)[:2000],
        "tail": "\n".join(tail),
        "where": where,
    }


def _load_module(name: str, path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _vm_status() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmPeak", "VmHWM"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------------------
# The candidate's process: runs the candidate, writes raw outputs, judges nothing.


def _write_frame(out: IO[bytes], index: int, name: str, tensors: list[tuple[str, Any]]) -> None:
    """One case's raw buffers: ``<u64 header length><header JSON><payload bytes…>``."""
    header = {"case": index, "name": name,
              "buffers": [{"name": n, "dtype": str(t.dtype).removeprefix("torch."),
                           "numel": t.numel()} for n, t in tensors]}
    head = json.dumps(header).encode()
    out.write(struct.pack("<Q", len(head)) + head)
    for _, t in tensors:
        out.write(t.numpy().tobytes())
    out.flush()


def candidate_main(job: dict[str, Any], report_fd: int, outputs_fd: int) -> int:
    """Run the candidate on every case and write its raw outputs; return the exit code.

    Runs in the forked child that the candidate shares. Nothing here decides pass or
    fail: the report (``report_fd``) says how far the run got and what went wrong, the
    outputs (``outputs_fd``) are the buffers as the candidate left them, and the judge (a
    process the candidate never runs in) compares them with the expected outputs.
    """
    sys.dont_write_bytecode = True
    report_file: IO[str] = os.fdopen(report_fd, "w")
    outputs: IO[bytes] = os.fdopen(outputs_fd, "wb")
    report: dict[str, Any] = {"status": "starting", "cases": [], "violations": []}

    def flush() -> None:
        report_file.seek(0)
        report_file.truncate()
        json.dump(report, report_file)
        report_file.flush()

    # The OS layer goes first, while this process has one thread; files already open (the
    # report, the outputs, stdout, stderr) stay writable, nothing else outside the
    # workspace does.
    report["isolation"] = (isolate(job["writable"], job["protected"]) if job.get("isolate", True)
                           else {"os_layer": "off (job asked for none)"})
    flush()
    import torch
    import triton  # noqa: F401 - imported before the sandbox closes, with TRITON_INTERPRET set

    torch.set_num_threads(1)
    # The reference only builds the inputs here; the expected outputs are never computed
    # in this process.
    reference = _load_module("ctxmem_kernel_reference", job["reference_path"])
    prepared = [(case, reference.build_inputs(case)) for case in job["cases"]]

    sandbox = Sandbox(job["writable"], job["protected"])
    sys.addaudithook(sandbox.hook)
    report["isolation"]["audit_hook"] = "installed"
    source_file, display = job["source_path"], job["display_name"]

    def finish(status: str, error: dict[str, Any] | None = None) -> int:
        if sandbox.violations:
            status = "sandbox_violation"
        report["status"] = status
        report["violations"] = sandbox.violations
        if error is not None:
            report["error"] = error
        report.update(_vm_status())
        flush()
        return 0

    os.chdir(job["workspace"])
    sandbox.active = True
    try:
        candidate = _load_module("candidate_kernel", source_file)
    except SyntaxError as exc:
        return finish("compile_error", _exception_info(exc, source_file, display))
    except BaseException as exc:
        kind = "memory_limit" if _is_memory_error(exc) else "error"
        info = _exception_info(exc, source_file, display)
        info["phase"] = "import"
        return finish(kind, info)
    entry = getattr(candidate, "launch", None) or getattr(candidate, "extend_attention", None)
    if not callable(entry):
        return finish("error", {"type": "InterfaceError", "phase": "import", "where": None,
                                "message": f"{display} defines neither launch() nor "
                                           "extend_attention()", "tail": ""})

    config = job["config"]
    guard_rows = int(job["guard_rows"])
    for index, (case, clean) in enumerate(prepared):
        entry_result = _run_case(torch, entry, index, case, clean, config, guard_rows, outputs)
        if "exception" in entry_result:
            raised: BaseException = entry_result.pop("exception")
            info = _exception_info(raised, source_file, display)
            info["phase"] = f"case {case['name']}"
            report["cases"].append(entry_result)
            kind = "memory_limit" if _is_memory_error(raised) else "error"
            if isinstance(raised, SyntaxError) or type(raised).__name__ == "CompilationError":
                kind = "compile_error"
            return finish(kind, info)
        report["cases"].append(entry_result)
        if sandbox.violations:
            # A refused action may have been swallowed; the check is void either way.
            return finish("sandbox_violation")
        flush()
    return finish("ok")


def _guarded(torch: Any, src: Any, guard: int, fill: float | int) -> tuple[Any, Any]:
    """A copy of ``src`` inside a flat buffer with ``guard`` poisoned elements each side."""
    n = src.numel()
    buf = torch.full((guard + n + guard,), fill, dtype=src.dtype)
    view = buf[guard : guard + n].view(src.shape)
    view.copy_(src)
    return buf, view


def _poison_slot(torch: Any, clean: dict[str, Any]) -> int:
    nan_rows = torch.isnan(clean["k_pool"][:, 0, 0]).nonzero()
    return int(nan_rows[0, 0]) if len(nan_rows) else 0


def _guarded_inputs(torch: Any, clean: dict[str, Any], guard: int) -> dict[str, tuple[Any, Any]]:
    poison_slot = _poison_slot(torch, clean)
    return {name: _guarded(torch, t, guard,
                           float("nan") if t.is_floating_point() else poison_slot)
            for name, t in clean.items()}


def _run_case(torch: Any, entry: Any, index: int, case: dict[str, Any], clean: dict[str, Any],
              config: dict[str, Any], guard_rows: int, outputs: IO[bytes]) -> dict[str, Any]:
    guard = guard_rows * case["num_q_heads"] * case["head_dim"]
    record: dict[str, Any] = {"name": case["name"]}
    guarded = _guarded_inputs(torch, clean, guard)
    views = {name: view for name, (_, view) in guarded.items()}
    out_buf, out = _guarded(torch, torch.full_like(clean["q"], float("nan")), guard, float("nan"))
    head_dim = case["head_dim"]
    kwargs = dict(config)
    kwargs.update(sm_scale=head_dim**-0.5, soft_cap=float(case["soft_cap"]),
                  window=int(case["window"]))
    t0 = time.perf_counter()
    try:
        entry(views["q"], views["k_new"], views["v_new"], out, views["k_pool"], views["v_pool"],
              views["req_to_token"], views["req_idx"], views["prefix_lens"],
              views["extend_lens"], views["extend_starts"], **kwargs)
    except BaseException as exc:
        record["seconds"] = round(time.perf_counter() - t0, 3)
        record["exception"] = exc
        return record
    record["seconds"] = round(time.perf_counter() - t0, 3)
    # The whole buffers, guard bands included: out-of-bounds writes and writes into the
    # inputs are judged from them too.
    _write_frame(outputs, index, case["name"],
                 [("out", out_buf), *((name, buf) for name, (buf, _) in guarded.items())])
    record["written"] = True
    return record


# ---------------------------------------------------------------------------------------
# The judge: a process the candidate never runs in.


class OutputError(ValueError):
    """The candidate's process left outputs that cannot be read as this job's buffers."""


def _read_exact(f: IO[bytes], n: int, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise OutputError(f"{what} is truncated ({len(data)} of {n} bytes)")
    return data


def _read_frame(torch: Any, f: IO[bytes], index: int, name: str,
                expect: list[tuple[str, Any, int]]) -> dict[str, Any] | None:
    """The next frame, checked against ``expect`` = [(buffer, dtype, numel)]; None at EOF."""
    size = f.read(8)
    if not size:
        return None
    if len(size) != 8:
        raise OutputError(f"the output record of case {index} ({name}) is truncated")
    (length,) = struct.unpack("<Q", size)
    if length > 1 << 20:
        raise OutputError(f"the output record of case {index} ({name}) has a bad header")
    try:
        header = json.loads(_read_exact(f, length, f"the output header of case {index}"))
    except ValueError as exc:
        raise OutputError(f"the output header of case {index} ({name}) is not JSON") from exc
    wanted = [{"name": n, "dtype": str(d).removeprefix("torch."), "numel": k} for n, d, k in expect]
    if not isinstance(header, dict) or header.get("case") != index or header.get("name") != name \
            or header.get("buffers") != wanted:
        raise OutputError(f"the output record of case {index} ({name}) does not describe "
                          "this case's buffers")
    buffers = {}
    for n, dtype, numel in expect:
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        data = bytearray(_read_exact(f, nbytes, f"buffer {n} of case {index} ({name})"))
        buffers[n] = torch.frombuffer(data, dtype=dtype) if numel else torch.empty(0, dtype=dtype)
    return buffers


def _bits(torch: Any, t: Any) -> Any:
    if t.dtype == torch.float16:
        return t.view(torch.int16)
    if t.dtype == torch.float32:
        return t.view(torch.int32)
    return t


def _judge_case(torch: Any, case: dict[str, Any], clean: dict[str, Any], expected: Any,
                buffers: dict[str, Any], guard: int, tol: dict[str, float]) -> dict[str, Any]:
    record: dict[str, Any] = {"name": case["name"], "passed": False, "numel": expected.numel()}
    out_buf = buffers["out"]
    n = expected.numel()
    out = out_buf[guard : guard + n].view(expected.shape)
    # Out-of-bounds writes: guard elements of the output that are no longer NaN, and any
    # change at all in the inputs' buffers (guards or payload).
    lo, hi = out_buf[:guard], out_buf[guard + n:]
    record["oob_writes"] = int((~torch.isnan(lo)).sum() + (~torch.isnan(hi)).sum())
    modified = []
    for name, (ref_buf, _) in _guarded_inputs(torch, clean, guard).items():
        if not torch.equal(_bits(torch, buffers[name]), _bits(torch, ref_buf)):
            modified.append(name)
    record["inputs_modified"] = modified

    got = out.float()
    diff = (got - expected).abs()
    ok = diff <= tol["atol"] + tol["rtol"] * expected.abs()
    finite = torch.isfinite(diff)
    record["nan_count"] = int(torch.isnan(got).sum())
    record["mismatches"] = int((~ok).sum())
    record["max_abs_err"] = float(diff[finite].max()) if bool(finite.any()) else None
    if record["mismatches"]:
        bad = (~ok).nonzero()[0].tolist()
        record["first_mismatch"] = {"index": bad, "got": _num(got[tuple(bad)]),
                                    "expected": _num(expected[tuple(bad)])}
    record["passed"] = not record["mismatches"] and not record["oob_writes"] and not modified
    return record


def _num(x: Any) -> float | None:
    value = float(x)
    return value if value == value and abs(value) != float("inf") else None


_REPORTED = ("ok", "compile_error", "error", "memory_limit", "sandbox_violation")


def _text(value: Any, limit: int = 4000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _clean_error(error: Any) -> dict[str, Any] | None:
    """The candidate's account of an exception, reduced to plain strings (it is untrusted)."""
    if not isinstance(error, dict):
        return None
    out: dict[str, Any] = {k: _text(error.get(k)) for k in ("type", "message", "tail")}
    if isinstance(error.get("phase"), str):
        out["phase"] = _text(error["phase"], 200)
    where = error.get("where")
    out["where"] = None
    if isinstance(where, dict) and isinstance(where.get("line"), int) \
            and not isinstance(where.get("line"), bool):
        out["where"] = {"line": where["line"], "function": _text(where.get("function"), 200),
                        "code": _text(where.get("code"), 500) or None}
    return out


def _clean_report(raw: Any) -> dict[str, Any]:
    """What the judge keeps of the candidate process's report: never a pass/fail claim."""
    raw = raw if isinstance(raw, dict) else {}
    status = raw.get("status") if raw.get("status") in _REPORTED else None
    cases = [c for c in raw.get("cases", []) if isinstance(c, dict)][:10_000] \
        if isinstance(raw.get("cases"), list) else []
    violations = raw.get("violations") if isinstance(raw.get("violations"), list) else []
    isolation = raw.get("isolation") if isinstance(raw.get("isolation"), dict) else {}
    return {
        "status": status,
        "error": _clean_error(raw.get("error")),
        "cases": cases,
        "violations": [{"kind": _text(v.get("kind"), 200), "detail": _text(v.get("detail"), 500)}
                       for v in violations[:50] if isinstance(v, dict)],
        "isolation": {_text(k, 100): _text(v, 500) for k, v in isolation.items()},
        **{k: raw[k] for k in ("VmPeak", "VmHWM")
           if isinstance(raw.get(k), int) and not isinstance(raw.get(k), bool)},
    }


def _seconds(entry: dict[str, Any]) -> float | None:
    value = entry.get("seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def judge(torch: Any, job: dict[str, Any], prepared: list[tuple[dict[str, Any], Any, Any]],
          raw_report: Any, outputs: IO[bytes] | None) -> dict[str, Any]:
    """The verdict on one run, from the candidate's raw outputs and the expected outputs.

    ``prepared`` = [(case, clean inputs, expected output)], computed here, never in the
    candidate's process. Of the candidate process's report only its account of what went
    wrong is kept (status other than pass/fail, exception text, refused actions, memory
    figures); every number that decides a case comes from ``outputs``.
    """
    report = _clean_report(raw_report)
    status = report.pop("status")
    claimed = report.pop("cases")
    result: dict[str, Any] = {**report, "cases": []}
    guard_rows = int(job["guard_rows"])
    tolerances = job["tolerances"]
    problem = None
    for index, (case, clean, expected) in enumerate(prepared):
        guard = guard_rows * case["num_q_heads"] * case["head_dim"]
        expect = [("out", clean["q"].dtype, expected.numel() + 2 * guard),
                  *((n, t.dtype, t.numel() + 2 * guard) for n, t in clean.items())]
        try:
            if outputs is None:
                raise OutputError("the candidate's process left no output file")
            buffers = _read_frame(torch, outputs, index, case["name"], expect)
        except OutputError as exc:
            problem = (index, str(exc))
            break
        if buffers is None:
            if status == "ok":
                problem = (index, f"no output record for case {index} ({case['name']})")
            elif index < len(claimed) and not claimed[index].get("written"):
                # The case the candidate raised in (its account, and a failure either way).
                result["cases"].append({"name": case["name"], "passed": False,
                                        "numel": expected.numel(),
                                        "seconds": _seconds(claimed[index])})
            break
        record = _judge_case(torch, case, clean, expected, buffers, guard,
                             tolerances[case["dtype"]])
        record["seconds"] = _seconds(claimed[index]) if index < len(claimed) else None
        result["cases"].append(record)
    else:
        if outputs is not None and outputs.read(1):
            problem = (len(prepared), "the output file has data past the last case")
    if problem is not None and status == "ok":
        # The candidate's process says it finished, but its outputs do not show it: a
        # failure, whatever else it claims. (After a crash or an exception the outputs stop
        # early anyway; what the crash or exception says is the better message then.)
        index, message = problem
        phase = (f"case {prepared[index][0]['name']}" if index < len(prepared)
                 else "reading outputs")
        status = "error"
        result["error"] = {"type": "OutputError", "phase": phase, "where": None,
                           "message": message, "tail": f"OutputError: {message}"}
    if status is not None:
        result["status"] = status
    return result


def _expected(torch: Any, job: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Any]]:
    reference = _load_module("ctxmem_kernel_reference", job["reference_path"])
    prepared = []
    with torch.no_grad():
        for case in job["cases"]:
            inputs = reference.build_inputs(case)
            # The expected output is computed in fp32 from the (possibly fp16) inputs.
            model = reference.Model(*reference.init_args(case))
            expected = model(*[inputs[n].float()
                               if n in ("q", "k_new", "v_new", "k_pool", "v_pool")
                               else inputs[n] for n in reference.INPUT_NAMES])
            prepared.append((case, inputs, expected))
    return prepared


def _judge_main(request: dict[str, Any], go_fd: int, import_seconds: float) -> int:
    """In the forked judge: expected outputs first (while the candidate runs), then the verdict."""
    import torch

    with open(request["job"]) as f:
        job = json.load(f)
    result_path = request["result"]
    try:
        prepared = _expected(torch, job)
        with os.fdopen(go_fd, "rb") as go:
            child = json.loads(go.read() or b"{}")  # blocks until the candidate is gone
        try:
            with open(result_path + ".report") as f:
                raw_report: Any = json.load(f)
        except (OSError, ValueError):
            raw_report = {}
        try:
            outputs: IO[bytes] | None = open(result_path + ".outputs", "rb")  # noqa: SIM115
        except OSError:
            outputs = None
        try:
            result = judge(torch, job, prepared, raw_report, outputs)
        finally:
            if outputs is not None:
                outputs.close()
        result["child"] = child
    except BaseException:
        result = {"harness_error": traceback.format_exc()[-4000:], "cases": [],
                  "violations": []}
    result["import_seconds"] = import_seconds
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.replace(tmp, result_path)
    return 0


# ---------------------------------------------------------------------------------------
# The supervisor: forks the candidate's process and the judge, waits, reports.

JUDGE_TIMEOUT_S = 120.0


def _setup_child(request: dict[str, Any], close: tuple[int, ...]) -> None:
    """In a forked child: own process group, the request's stdio, environment and cwd."""
    os.setpgid(0, 0)
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        if key in request:
            target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
    if "env" in request:
        os.environ.clear()
        os.environ.update(request["env"])
        import tempfile

        tempfile.tempdir = None  # TMPDIR changed
    if "cwd" in request:
        os.chdir(request["cwd"])


def _in_child(body: Any) -> int:
    rc = 1
    try:
        rc = body()
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
    return rc


def supervise(request: dict[str, Any], *, import_seconds: float,
              close: tuple[int, ...] = ()) -> dict[str, Any]:
    """Run one job: the candidate's process, then the judge; the candidate's exit status.

    ``close`` are descriptors of the supervisor (the warm server's request and reply
    pipes) that neither child may keep.
    """
    result_path = request["result"]
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    report_fd = os.open(result_path + ".report", flags, 0o600)
    outputs_fd = os.open(result_path + ".outputs", flags, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        def candidate() -> int:
            _setup_child(request, close)
            with open(request["job"]) as f:
                job = json.load(f)
            return candidate_main(job, report_fd, outputs_fd)

        os._exit(_in_child(candidate))
    os.close(report_fd)
    os.close(outputs_fd)
    # The judge is forked after the candidate, so nothing it computes was ever in the
    # candidate's memory; it computes the expected outputs while the candidate runs.
    go_r, go_w = os.pipe()
    judge_pid = os.fork()
    if judge_pid == 0:
        os.close(go_w)

        def run_judge() -> int:
            os.setpgid(0, 0)
            for fd in close:
                with contextlib.suppress(OSError):
                    os.close(fd)
            return _judge_main(request, go_r, import_seconds)

        os._exit(_in_child(run_judge))
    os.close(go_r)
    returncode, timed_out = _wait(pid, float(request["timeout"]))
    wall = round(time.monotonic() - t0, 3)
    child = {"returncode": returncode, "timed_out": timed_out, "wall_s": wall}
    with contextlib.suppress(OSError):
        os.write(go_w, json.dumps(child).encode())
    os.close(go_w)
    judge_rc, judge_timed_out = _wait(judge_pid, JUDGE_TIMEOUT_S)
    if judge_rc != 0 or judge_timed_out:
        with open(result_path, "w") as f:
            json.dump({"harness_error": f"the judge exited with status {judge_rc}"
                       + (" (timed out)" if judge_timed_out else ""),
                       "cases": [], "violations": [], "child": child}, f)
    return child


def main(job_path: str, result_path: str) -> int:
    """The one-shot path: import once, then supervise the job like the warm server does."""
    sys.dont_write_bytecode = True
    started = time.perf_counter()
    import torch
    import triton  # noqa: F401 - TRITON_INTERPRET=1 is already in the environment

    torch.set_num_threads(1)
    import_seconds = round(time.perf_counter() - started, 3)
    with open(job_path) as f:
        timeout = float(json.load(f).get("timeout_s", 3600.0))
    supervise({"job": job_path, "result": result_path, "timeout": timeout},
              import_seconds=import_seconds)
    return 0


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """Wait for child ``pid`` up to ``timeout`` seconds; kill its group when it overruns."""
    import select
    import signal

    pidfd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([pidfd], [], [], max(timeout, 0.0))
    finally:
        os.close(pidfd)
    timed_out = not ready
    if timed_out:
        for target in (-pid, pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    # Nothing the candidate started may outlive the check.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(status), timed_out


def serve() -> int:
    sys.dont_write_bytecode = True
    # The protocol owns the original stdout; anything else printed goes to stderr's file.
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    started = time.perf_counter()
    import torch
    import triton  # noqa: F401 - TRITON_INTERPRET=1 is already in the environment

    torch.set_num_threads(1)
    channel.write(json.dumps({"ready": True,
                              "import_seconds": round(time.perf_counter() - started, 3)}) + "\n")
    channel.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        request = json.loads(line)
        child = supervise(request, import_seconds=0.0, close=(channel.fileno(),))
        channel.write(json.dumps(child) + "\n")
        channel.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        sys.exit(serve())
    sys.exit(main(sys.argv[1], sys.argv[2]))
