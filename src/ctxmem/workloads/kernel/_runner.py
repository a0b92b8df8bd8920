"""Inside the kernel sandbox: the zygote and the child that runs candidate code.

Run as a script, never imported by the sandboxed side as part of ctxmem:
``python -I _runner.py --serve CTXMEM_ROOT [--sweep]``. ``sandbox.py`` starts it inside
bubblewrap (``bwrap.py``), or — only when the user explicitly accepted the risk — as a
plain child process. The harness-side modules (``judge.py``) import the pure helpers here
(:func:`guarded_inputs`, :func:`write_frame`, :func:`load_module`).

**The zygote** (:func:`serve`) imports torch and triton once (``TRITON_INTERPRET=1`` is in
its environment before that), marks itself non-dumpable (so no process in the sandbox can
read its memory or its descriptors through ``/proc``) and then serves one request per
line on its stdin: a check folder (``/box/<random>``, created by the harness with the job,
a copy of the workspace and scratch folders) and a kind (``check`` or ``entry``). Per
request it forks a child, waits for it at most the request's wall clock (killing it when
it overruns), then — inside bubblewrap — kills every other process left in the sandbox's
PID namespace but itself — it is that namespace's init (``--sweep``), and answers with the child's exit
status, whether it timed out, and how many leftovers it killed. It never loads candidate
code and never computes an expected output; it holds no secret (its environment is the
harness's allow-list).

**The child** (:func:`_child`) is the only process that runs candidate code: it takes its
own process group, drops the zygote's pipes, sends stdin to ``/dev/null`` and stdout /
stderr to files in the check folder, takes the request's environment, enters the copy of
the workspace, sets its resource limits (address space, CPU seconds, file size, no core
dumps), applies :func:`isolate` when there is no bubblewrap, loads the per-check seccomp
filter (``_seccomp.py``: exec, new processes, signals to others, ptrace, mount, setns,
unshare, keyctl … kill it), installs the audit hook (:class:`Sandbox`) and only then
imports candidate code:

* ``check`` — :func:`candidate_main`: builds the inputs with the pristine reference, runs
  the candidate on each case with NaN guard bands around every buffer and writes the raw
  buffers (output and inputs, guard bands included) to ``outputs.bin`` and its account
  of the run to ``report.json``. It compares nothing: the judge (``judge.py``, outside
  the sandbox) does;
* ``entry`` — :func:`entry_main`: imports ``module:function`` (trusted ctxmem code, e.g.
  an instrumented interpreter run), calls it with the job and writes its JSON-able result
  to ``result.json``. Everything written there is untrusted by the harness.

Without bubblewrap (``CTXMEM_KERNEL_ALLOW_UNSANDBOXED=1``) the child applies the older OS
layer, :func:`isolate` — a private network namespace, a mount namespace where everything
but the check folder is read-only, ``PR_SET_NO_NEW_PRIVS`` — where the OS permits it, and
the seccomp filter and audit hook as always; what was in force is reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import importlib
import importlib.util
import json
import os
import resource
import signal
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
     "os.symlink", "os.rename", "shutil.rmtree", "os.chflags", "os.lchflags"}
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
MAX_VIOLATIONS = 50
_CHANNEL_BYTES = 1 << 20  # what the zygote reads of a child's violation channel

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


def _under(real: str, roots: list[str]) -> bool:
    return any(real == r or real.startswith(r + os.sep) for r in roots)


class Sandbox:
    """The audit hook: the second layer, which sees the candidate's Python.

    It refuses — and records, so the check is reported as a violation even when the
    candidate swallows the exception — file writes outside the check folder, opening a
    directory outside it (a descriptor usable as ``dir_fd``), relative writes through
    ``..``, hard links, SQLite databases outside it, anything under ``/proc`` but this
    process's own non-memory files, sockets, starting processes, signals to other
    processes, and every use of ``ctypes`` that reaches native code.
    """

    def __init__(self, writable: list[str], protected: list[str],
                 channel: int | None = None) -> None:
        self.writable = [os.path.realpath(p) for p in writable]
        self.protected = [os.path.realpath(p) for p in protected]
        self.active = False
        self.violations: list[dict[str, str]] = []
        # The write end of a pipe the zygote drains: each refusal is sent there as it
        # happens, where the candidate cannot take it back (it holds no read end), so a
        # forged report cannot hide it.
        self.channel = channel

    def _allowed(self, path: Any) -> bool:
        try:
            text = os.fsdecode(path)
            real = os.path.realpath(text)
        except (TypeError, ValueError):
            return False
        if real == os.devnull:
            return True
        if not os.path.isabs(text) and ".." in text.split(os.sep):
            return False  # relative to an unknown dir_fd, '..' could lead anywhere
        return _under(real, self.writable) and not _under(real, self.protected)

    def _check_proc(self, path: Any) -> None:
        """Refuse ``/proc`` itself, ``/proc/<pid>/…`` of any other process, raw memory of this one."""
        try:
            real = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        parts = real.split(os.sep)
        if len(parts) < 2 or parts[1] != "proc":
            return
        if len(parts) == 2:
            self._refuse("reading another process", real + " (a /proc descriptor reaches every process)")
        if not parts[2].isdigit():
            return
        if int(parts[2]) != os.getpid():
            self._refuse("reading another process", real)
        if len(parts) == 3 or parts[-1] in ("mem", "pagemap", "environ", "auxv", "root", "cwd"):
            self._refuse("reading raw process memory", real)

    def _refuse(self, kind: str, detail: str) -> None:
        violation = {"kind": kind, "detail": detail[:500]}
        self.violations.append(violation)
        if self.channel is not None and len(self.violations) <= MAX_VIOLATIONS:
            with contextlib.suppress(OSError):
                os.write(self.channel, json.dumps(violation).encode() + b"\n")
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
            if not writing and isinstance(flags, int) and not self._allowed(path) \
                    and os.path.isdir(os.fsdecode(path)):
                self._refuse("opening a directory outside the workspace", os.fsdecode(path))
        elif event == "os.link":
            self._refuse("hard link", _brief(args))
        elif event in PATH_EVENTS:
            targets = [a for a in args[:2] if isinstance(a, str | bytes | os.PathLike)]
            for target in targets[: 2 if event in ("os.rename", "os.symlink") else 1]:
                if not self._allowed(target):
                    self._refuse(f"{event} outside the workspace", os.fsdecode(target))
        elif event == "sqlite3.connect":
            database = args[0] if args else None
            if isinstance(database, str | bytes | os.PathLike) and os.fsdecode(database) not in ("", ":memory:") \
                    and not self._allowed(database):
                self._refuse("opening a database outside the workspace", os.fsdecode(database))
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


def load_module(name: str, path: str) -> ModuleType:
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


def write_frame(out: IO[bytes], index: int, name: str, tensors: list[tuple[str, Any]]) -> None:
    """One case's raw buffers: ``<u64 header length><header JSON><payload bytes…>``."""
    header = {"case": index, "name": name,
              "buffers": [{"name": n, "dtype": str(t.dtype).removeprefix("torch."),
                           "numel": t.numel()} for n, t in tensors]}
    head = json.dumps(header).encode()
    out.write(struct.pack("<Q", len(head)) + head)
    for _, t in tensors:
        out.write(t.numpy().tobytes())
    out.flush()


def candidate_main(job: dict[str, Any], report_fd: int, outputs_fd: int,
                   layers: dict[str, str], channel: int | None = None) -> int:
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

    # The OS layers (bwrap, or isolate() without it) and the seccomp filter are already
    # in force (see _child); they are reported with the run.
    report["isolation"] = dict(layers)
    flush()
    import torch
    import triton  # noqa: F401 - imported before the sandbox closes, with TRITON_INTERPRET set

    torch.set_num_threads(1)
    # The reference only builds the inputs here; the expected outputs are never computed
    # in this process.
    reference = load_module("ctxmem_kernel_reference", job["reference_path"])
    prepared = [(case, reference.build_inputs(case)) for case in job["cases"]]

    sandbox = Sandbox(job["writable"], job.get("protected", []), channel)
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
        candidate = load_module("candidate_kernel", source_file)
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


def guarded(torch: Any, src: Any, guard: int, fill: float | int) -> tuple[Any, Any]:
    """A copy of ``src`` inside a flat buffer with ``guard`` poisoned elements each side."""
    n = src.numel()
    buf = torch.full((guard + n + guard,), fill, dtype=src.dtype)
    view = buf[guard : guard + n].view(src.shape)
    view.copy_(src)
    return buf, view


def _poison_slot(torch: Any, clean: dict[str, Any]) -> int:
    nan_rows = torch.isnan(clean["k_pool"][:, 0, 0]).nonzero()
    return int(nan_rows[0, 0]) if len(nan_rows) else 0


def guarded_inputs(torch: Any, clean: dict[str, Any], guard: int) -> dict[str, tuple[Any, Any]]:
    poison_slot = _poison_slot(torch, clean)
    return {name: guarded(torch, t, guard,
                           float("nan") if t.is_floating_point() else poison_slot)
            for name, t in clean.items()}


def _run_case(torch: Any, entry: Any, index: int, case: dict[str, Any], clean: dict[str, Any],
              config: dict[str, Any], guard_rows: int, outputs: IO[bytes]) -> dict[str, Any]:
    guard = guard_rows * case["num_q_heads"] * case["head_dim"]
    record: dict[str, Any] = {"name": case["name"]}
    bufs = guarded_inputs(torch, clean, guard)
    views = {name: view for name, (_, view) in bufs.items()}
    out_buf, out = guarded(torch, torch.full_like(clean["q"], float("nan")), guard, float("nan"))
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
    write_frame(outputs, index, case["name"],
                 [("out", out_buf), *((name, buf) for name, (buf, _) in bufs.items())])
    record["written"] = True
    return record




# ---------------------------------------------------------------------------------------
# The child: limits, layers, then candidate code.

PR_SET_DUMPABLE = 4
_SECCOMP: ModuleType | None = None


def _seccomp_module() -> ModuleType:
    global _SECCOMP
    if _SECCOMP is None:
        here = os.path.dirname(os.path.abspath(__file__))
        _SECCOMP = load_module("ctxmem_kernel_seccomp", os.path.join(here, "_seccomp.py"))
        _SECCOMP._seccomp()  # import pyseccomp (and dlopen libseccomp) in the zygote
    return _SECCOMP


def _set_dumpable(value: int) -> None:
    _libc().prctl(ctypes.c_int(PR_SET_DUMPABLE), ctypes.c_ulong(value), ctypes.c_ulong(0),
                  ctypes.c_ulong(0), ctypes.c_ulong(0))


def _open_in(folder: str, name: str, flags: int) -> int:
    return os.open(os.path.join(folder, name), flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _set_limits(limits: dict[str, int]) -> None:
    memory, fsize, cpu = limits["memory"], limits["fsize"], limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Writing past the file-size limit should fail the write, not kill the child.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _child(request: dict[str, Any], close: tuple[int, ...], channel: int) -> int:
    os.setpgid(0, 0)
    for fd in close:
        with contextlib.suppress(OSError):
            os.close(fd)
    folder = request["dir"]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
        target = _open_in(folder, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(request["env"])
    import tempfile

    tempfile.tempdir = None  # TMPDIR changed
    os.chdir(os.path.join(folder, "ws"))
    _set_limits(request["limits"])
    layers: dict[str, str] = {}
    if request.get("isolate"):
        layers.update(isolate([folder], []))
    _set_dumpable(0)
    layers["seccomp"] = _seccomp_module().install_candidate_filter()
    if request["kind"] == "check":
        with open(os.path.join(folder, "job.json")) as f:
            job = json.load(f)
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        return candidate_main(job, _open_in(folder, "report.json", flags),
                              _open_in(folder, "outputs.bin", flags), layers, channel)
    return entry_main(request, layers, channel)


def entry_main(request: dict[str, Any], layers: dict[str, str], channel: int | None = None) -> int:
    """Call ``request["entry"]`` (``module:function``) with the job; write ``result.json``."""
    folder = request["dir"]
    with open(os.path.join(folder, "job.json")) as f:
        job = json.load(f)
    out: dict[str, Any] = {"status": "ok", "isolation": layers, "violations": []}
    module_name, _, function_name = request["entry"].partition(":")
    sandbox = Sandbox([folder], [], channel)
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        if request.get("audit_hook", True):
            sys.addaudithook(sandbox.hook)
            out["isolation"]["audit_hook"] = "installed"
            sandbox.active = True
        else:
            out["isolation"]["audit_hook"] = "off (the harness asked for the OS layers alone)"
        out["result"] = function(job)
    except BaseException as exc:
        out["status"] = "memory_limit" if _is_memory_error(exc) else "error"
        out["error"] = _exception_info(exc, job.get("source_path", "\0"),
                                       job.get("display_name", "candidate"))
    sandbox.active = False
    if sandbox.violations:
        out["status"] = "sandbox_violation"
    out["violations"] = sandbox.violations
    fd = _open_in(folder, "result.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        json.dump(out, f, default=repr)
    return 0


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


# ---------------------------------------------------------------------------------------
# The zygote.


def _wait(pid: int, timeout: float, channel: int | None = None) -> tuple[int, bool, bytes]:
    """Wait for child ``pid`` up to ``timeout`` seconds, draining ``channel`` meanwhile;
    kill its group when it overruns. (exit status, timed out, what the channel carried)."""
    import select

    received = bytearray()

    def drain() -> None:
        while channel is not None and len(received) < _CHANNEL_BYTES:
            try:
                chunk = os.read(channel, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            received.extend(chunk)

    pidfd = os.pidfd_open(pid)
    deadline = time.monotonic() + max(timeout, 0.0)
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            watch = [pidfd] if channel is None or len(received) >= _CHANNEL_BYTES else [pidfd, channel]
            ready, _, _ = select.select(watch, [], [], left)
            if channel is not None and channel in ready:
                drain()
            if pidfd in ready:
                break
    finally:
        os.close(pidfd)
    if timed_out:
        for target in (-pid, pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    drain()
    return os.waitstatus_to_exitcode(status), timed_out, bytes(received)


def _violations(data: bytes) -> tuple[list[dict[str, str]], bool]:
    """The violations a child sent (each a JSON line), and whether it flooded the channel."""
    out: list[dict[str, str]] = []
    for line in data.split(b"\n")[:MAX_VIOLATIONS]:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("kind"), str) \
                and isinstance(item.get("detail"), str):
            out.append({"kind": item["kind"][:200], "detail": item["detail"][:500]})
    return out, len(data) >= _CHANNEL_BYTES


def _alive_others(keep: set[int]) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in keep:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            pids.append(int(name))
    return pids


def sweep(keep: set[int]) -> int:
    """Kill every live process of this PID namespace outside ``keep``; how many there were."""
    killed: set[int] = set()
    for _ in range(200):
        others = _alive_others(keep)
        if not others:
            break
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        time.sleep(0.005)
    return len(killed)


def serve(ctxmem_root: str, do_sweep: bool) -> int:
    sys.dont_write_bytecode = True
    if ctxmem_root not in sys.path:
        sys.path.insert(0, ctxmem_root)
    # The protocol owns the original stdout; anything else printed goes to stderr's file.
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    started = time.perf_counter()
    import torch
    import triton  # noqa: F401 - TRITON_INTERPRET=1 is already in the environment

    torch.set_num_threads(1)
    _seccomp_module()
    _set_dumpable(0)
    # Inside bwrap (--as-pid-1) the zygote is the namespace's init (pid 1): orphans come to
    # it, and the sweep reaps them.
    keep = {1, os.getpid()} if do_sweep else set()
    channel.write(json.dumps({"ready": True, "pid": os.getpid(),
                              "import_seconds": round(time.perf_counter() - started, 3)}) + "\n")
    channel.flush()
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        request = json.loads(line)
        if request["kind"] == "entry":
            # Trusted ctxmem code: imported here once, so every later child starts warm.
            with contextlib.suppress(Exception):
                importlib.import_module(request["entry"].partition(":")[0])
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        v_read, v_write = os.pipe()
        os.set_blocking(v_read, False)
        os.set_blocking(v_write, False)
        pid = os.fork()
        if pid == 0:
            # stdin (the request pipe) is replaced by /dev/null in the child.
            os._exit(_in_child(lambda r=request, vr=v_read, vw=v_write:
                               _child(r, (channel.fileno(), vr), vw)))
        os.close(v_write)
        try:
            returncode, timed_out, sent = _wait(pid, float(request["timeout"]), v_read)
        finally:
            os.close(v_read)
        wall = round(time.monotonic() - t0, 3)
        leftovers = sweep(keep) if do_sweep else 0
        violations, flooded = _violations(sent)
        channel.write(json.dumps({"returncode": returncode, "timed_out": timed_out,
                                  "wall_s": wall, "leftovers_killed": leftovers,
                                  "violations": violations, "flooded": flooded}) + "\n")
        channel.flush()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        sys.exit(serve(sys.argv[2], "--sweep" in sys.argv[3:]))
    sys.exit("usage: _runner.py --serve CTXMEM_ROOT [--sweep]")
