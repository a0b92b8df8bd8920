"""Bubblewrap (``bwrap``): the command line of the kernel sandbox, and whether it can start.

:func:`bwrap_argv` builds the one ``bwrap`` invocation the sandbox uses (see ``sandbox.py``
for the layers and the tests that prove them):

* ``--unshare-{user,pid,net,ipc,uts,cgroup}`` (and always a mount namespace) — fresh user, PID, mount, network, IPC, UTS and cgroup namespaces; the
  network namespace has only a downed loopback;
* ``--uid 65534 --gid 65534 --cap-drop ALL --disable-userns`` — ``nobody`` with no
  capabilities, unable to create another user namespace;
* ``--die-with-parent --new-session`` — the sandbox dies with the harness process; no
  controlling terminal to inject keystrokes into;
* ``--as-pid-1`` — the command (the zygote, which is not dumpable) is the namespace's init:
  no bwrap process is inside with it (bwrap's own reaper would run without the seccomp
  filter, and its memory would be writable through ``/proc/1/mem`` by the same uid), and
  when the zygote dies the kernel ends every process of the namespace;
* a root made of read-only binds of exactly what Python needs — ``/usr`` (and the host's
  ``/lib*``, ``/bin``, ``/sbin`` links), the Python runtime (``sys.base_prefix``,
  ``sys.prefix``), every ``site-packages`` folder, the folder that holds the ``ctxmem``
  package — plus ``/etc/ld.so.cache``; nothing else of the host (no ``/home``, ``/root``,
  ``/run``, ``/var``, no workspace);
* ``--proc /proc`` — a ``/proc`` of the sandbox's own PID namespace only (the harness and
  every other host process are invisible); ``--dev /dev`` — a minimal ``/dev``, remounted
  read-only: its ``/dev/shm`` was a writable tmpfs (half the host's memory) that outlived a
  check, so one check could leave files, FIFOs or gigabytes there for a later one;
* ``/tmp`` — a private tmpfs, remounted read-only, and so is bwrap's own root (``/etc``,
  ``/``): nothing a check writes outside its folder can be read by a later one;
* ``/box`` — the one writable bind: a host folder private to this sandbox, holding one
  fresh folder per check (the job, a copy of the workspace, scratch space, the outputs);
* ``--seccomp FD`` — the sandbox-wide filter (``_seccomp.py``);
* the environment is whatever the caller passes to ``Popen`` — an allow-list built by
  ``sandbox_env`` below — so not even ``bwrap``'s own ``/proc/1/environ`` holds a secret.

:func:`probe` starts ``bwrap`` once with the same namespace options and caches why it
could not, if it could not (no ``bwrap`` binary, user namespaces disabled, …).
``CTXMEM_BWRAP`` names another binary (tests point it at a missing one to exercise the
refusal path).
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

SANDBOX_UID = 65534
BOX = "/box"  # where the writable per-sandbox folder appears inside
_NAMESPACES = ["--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
               "--unshare-uts", "--unshare-cgroup", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
               "--cap-drop", "ALL", "--disable-userns", "--die-with-parent", "--new-session",
               "--as-pid-1",
               "--hostname", "ctxmem-sandbox"]


def bwrap_path() -> str | None:
    name = os.environ.get("CTXMEM_BWRAP", "bwrap")
    return shutil.which(name) if os.sep not in name else (name if os.access(name, os.X_OK) else None)


def ctxmem_root() -> Path:
    """The folder that holds the ``ctxmem`` package (bound read-only, put on ``sys.path``)."""
    import ctxmem

    return Path(ctxmem.__file__).resolve().parent.parent


def _runtime_dirs() -> list[str]:
    dirs = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, *site.getsitepackages())}
    dirs.add(str(ctxmem_root()))
    exe = os.path.realpath(sys.executable)
    dirs.add(os.path.dirname(os.path.dirname(exe)))
    # Drop folders already inside another bound folder (and anything under /usr, bound whole).
    kept: list[str] = []
    for d in sorted(dirs, key=len):
        if not os.path.isdir(d) or d == "/usr" or d.startswith("/usr/"):
            continue
        if not any(d == k or d.startswith(k + os.sep) for k in kept):
            kept.append(d)
    return kept


def bwrap_argv(binary: str, box_dir: Path, seccomp_fd: int | None, command: list[str]) -> list[str]:
    argv = [binary, *_NAMESPACES, "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + top
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    if os.path.exists("/etc/ld.so.cache"):
        argv += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # /tmp first: a runtime that lives under /tmp (a virtual environment, say) is bound on it.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for d in _runtime_dirs():
        argv += ["--ro-bind", d, d]
    argv += ["--remount-ro", "/tmp", "--remount-ro", "/dev", "--bind", str(box_dir), BOX, "--remount-ro", "/",
             "--chdir", BOX]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return [*argv, "--", *command]


@functools.cache
def probe() -> str | None:
    """``None`` when ``bwrap`` can start a sandbox here, else the reason it cannot."""
    binary = bwrap_path()
    if binary is None:
        return ("bubblewrap (bwrap) is not installed: install the Debian/Ubuntu package "
                "'bubblewrap' (scripts/install-system-deps.sh does)")
    try:
        proc = subprocess.run([binary, *_NAMESPACES, "--ro-bind", "/", "/", "--", "/bin/true"],
                              capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bwrap could not start: {exc}"
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        return (f"bwrap cannot create the sandbox's namespaces here ({reason}); user namespaces "
                "are probably disabled (sysctl kernel.unprivileged_userns_clone / "
                "user.max_user_namespaces, or a container without them)")
    return None


def sandbox_env(folder: str) -> dict[str, str]:
    """The whole environment of sandboxed code: constants and paths under ``folder``."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": f"{folder}/home",
        "TMPDIR": f"{folder}/tmp",
        "USER": "nobody",
        "LOGNAME": "nobody",
        "TRITON_INTERPRET": "1",
        "TRITON_CACHE_DIR": f"{folder}/triton",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # Unsandboxed fallback: no proxy a library could pick up from elsewhere.
        "no_proxy": "*",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
