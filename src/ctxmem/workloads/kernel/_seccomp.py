"""The two seccomp filters of the kernel sandbox, built with libseccomp (``pyseccomp``).

Standard library + ``pyseccomp`` only: the sandbox's zygote loads this file by path (see
``_runner.py``), the parent imports it as ``ctxmem.workloads.kernel._seccomp``.

* :func:`sandbox_filter_bpf` — the **sandbox-wide** filter, compiled to a BPF program in the
  parent and handed to ``bwrap --seccomp FD``: it applies to every process in the sandbox
  (the zygote included) from its first instruction. It refuses, with ``EPERM``, the system
  calls an unprivileged process has no business making and that widen the attack surface
  of the kernel: ``ptrace``, ``process_vm_readv/writev``, ``mount`` and the new mount API,
  ``setns``, ``unshare``, ``clone`` with any namespace flag, ``keyctl``/``add_key``/
  ``request_key``, ``bpf``, ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, module
  loading, ``kexec``, handle-based opens, ``TIOCSTI``; ``clone3`` answers ``ENOSYS`` (its
  flags live in memory a filter cannot read) so the C library falls back to ``clone``.
* :func:`install_candidate_filter` — the **per-check** filter, loaded in the forked child
  that will run candidate code, before any of it is imported, on top of the first one. A
  forbidden call *kills the process* (``SECCOMP_RET_KILL_PROCESS``), so an attempt cannot
  be swallowed and shows up as a death by ``SIGSYS``, which the harness reports as a sandbox
  violation. Forbidden: ``execve``/``execveat`` (the interpreter is already running; no
  other program may start), any new process (``fork``, ``vfork``, ``clone`` without
  ``CLONE_THREAD``: threads stay allowed), signals to any process but itself (``kill``,
  ``tgkill``, ``rt_(tg)sigqueueinfo`` unless the target is its own pid; ``tkill``,
  ``pidfd_*``), and everything the sandbox-wide filter refuses. Sockets answer ``EACCES``,
  and so do the ways to hold memory outside the address-space limit or past the check's
  end: ``memfd_create``/``memfd_secret`` (anonymous files: their pages are not in
  ``RLIMIT_AS``, 4 GiB was held under a 3 GiB limit) and System V shared memory, message
  queues and semaphores (``shmget``, ``msgget``, ``semget``: they outlive the process in the
  sandbox's IPC namespace, which every check of a warm sandbox shares), and POSIX queues.

Both filters leave every other call alone: the Triton interpreter and torch need the
ordinary file, memory and thread calls.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import IO, Any

CLONE_THREAD = 0x00010000
_NAMESPACE_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                    0x20000000, 0x40000000)  # NEWNS CGROUP UTS IPC USER PID NET
TIOCSTI = 0x5412

# Refused in every process of the sandbox.
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "pivot_root",
    "chroot", "setns", "unshare", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "init_module", "finit_module", "delete_module", "kexec_load",
    "kexec_file_load", "open_by_handle_at", "name_to_handle_at", "fsopen", "fsmount",
    "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr", "swapon", "swapoff",
    "reboot", "syslog", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "quotactl", "iopl", "ioperm", "lookup_dcookie", "uselib", "vhangup",
    "kcmp", "pidfd_getfd",
)
# Also fatal in the candidate's process.
CANDIDATE_FATAL = ("execve", "execveat", "fork", "vfork", "tkill", "pidfd_open",
                   "pidfd_send_signal")
# Refused (EACCES) in the candidate's process: memory that RLIMIT_AS does not count, or
# that outlives the process in the IPC namespace the checks of a warm sandbox share.
MEMORY_OUTSIDE_LIMITS = ("memfd_create", "memfd_secret", "shmget", "msgget", "semget", "mq_open")
# Signal calls whose first argument is the target process.
_SIGNALS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")


def _seccomp() -> Any:
    try:
        import pyseccomp
    except ImportError as exc:  # pragma: no cover - pyseccomp is in the kernels extra
        raise ImportError("the kernel sandbox needs pyseccomp: pip install 'ctxmem[kernels]'") from exc
    return pyseccomp


_UNAVAILABLE: list[str | None] = []


def unavailable() -> str | None:
    """Why no seccomp filter can be built here (``None``: it can); checked once."""
    if not _UNAVAILABLE:
        try:
            sc = _seccomp()
            sc.SyscallFilter(sc.ALLOW).add_rule(sc.ERRNO(errno.EPERM), "ptrace")
            _UNAVAILABLE.append(None)
        except (ImportError, OSError, RuntimeError, AttributeError) as exc:
            _UNAVAILABLE.append(f"no seccomp filter can be built ({exc}); install libseccomp2 "
                                "and pip install 'ctxmem[kernels]'")
    return _UNAVAILABLE[0]


def _add(f: Any, sc: Any, action: int, name: str, *args: Any) -> None:
    # A call this architecture does not have (resolve_syscall fails): nothing to refuse.
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        f.add_rule(action, name, *args)


def _base_rules(f: Any, sc: Any, action: int) -> None:
    for name in DENIED:
        _add(f, sc, action, name)
    for flag in _NAMESPACE_FLAGS:
        _add(f, sc, action, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    _add(f, sc, action, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    _add(f, sc, sc.ERRNO(errno.ENOSYS), "clone3")


def sandbox_filter_bpf(out: IO[bytes]) -> None:
    """Write the sandbox-wide filter, as a BPF program for ``bwrap --seccomp``, to ``out``."""
    sc = _seccomp()
    f = sc.SyscallFilter(sc.ALLOW)
    _base_rules(f, sc, sc.ERRNO(errno.EPERM))
    f.export_bpf(out)


def install_candidate_filter() -> str:
    """Load the per-check filter in this process (single-threaded, before candidate code)."""
    sc = _seccomp()
    me = os.getpid()
    f = sc.SyscallFilter(sc.ALLOW)
    kill = sc.KILL_PROCESS
    _base_rules(f, sc, kill)
    for name in CANDIDATE_FATAL:
        _add(f, sc, kill, name)
    _add(f, sc, kill, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
    for name in _SIGNALS:
        # Any target but this process (pid 0 and negative pids, i.e. groups, included).
        _add(f, sc, kill, name, sc.Arg(0, sc.LT, me))
        _add(f, sc, kill, name, sc.Arg(0, sc.GT, me))
    for name in ("socket", "socketpair", *MEMORY_OUTSIDE_LIMITS):
        _add(f, sc, sc.ERRNO(errno.EACCES), name)
    f.load()
    return "loaded (exec, new processes, signals to others, ptrace, mount, setns, unshare, keyctl: fatal)"
