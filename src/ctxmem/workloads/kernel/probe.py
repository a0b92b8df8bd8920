"""What the kernel sandbox lets through, surveyed from inside it.

:func:`survey` is an entry for :func:`~ctxmem.workloads.kernel.sandbox.run_in_sandbox`:
it runs inside the sandbox and reports what a process there can see and do — its
identity and capabilities, the processes and environments visible through ``/proc``
(also through a directory descriptor), the memory it can read, host paths it can reach,
writes it can make, connections it can open, programs it can start. The tests of
``tests/workloads/kernel/test_attacks*.py`` run it with the audit hook off
(``audit_hook=False``), so that every answer is the OS layers' alone; a user can run it to
see what a host's sandbox holds (``python -m ctxmem.workloads.kernel.probe``).
:func:`check_latency` times correctness checks on the user's path
(``python -m ctxmem.workloads.kernel.probe --latency 8``).

Every probe catches its own error and reports it as text: a probe that fails is the
sandbox working.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from functools import partial
from typing import Any


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as exc:  # every refusal is an answer
        return f"refused: {type(exc).__name__}: {exc}"


def _status_field(name: str) -> str:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
    return ""


def _proc_through_dir_fd(needles: list[bytes]) -> dict[str, Any]:
    """Every visible process's environ, cmdline and memory, opened relative to a /proc fd."""
    proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    out: dict[str, Any] = {}
    try:
        for name in os.listdir(proc):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            entry: dict[str, Any] = {}
            for leaf in ("environ", "cmdline"):
                entry[leaf] = _try(partial(_read_at, proc, f"{name}/{leaf}"))
            entry["mem"] = _try(partial(_read_mem, proc, name, needles))
            out[name] = entry
    finally:
        os.close(proc)
    return out


def _read_at(dir_fd: int, path: str, limit: int = 1 << 16) -> str:
    fd = os.open(path, os.O_RDONLY, dir_fd=dir_fd)
    try:
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _read_mem(dir_fd: int, pid: str, needles: list[bytes]) -> str:
    """Read every readable mapping of process ``pid``; how much, and which needles were in it."""
    maps = _read_at(dir_fd, f"{pid}/maps", 1 << 20)
    fd = os.open(f"{pid}/mem", os.O_RDONLY, dir_fd=dir_fd)
    found: set[bytes] = set()
    total = 0
    try:
        for line in maps.splitlines():
            span, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            lo, hi = (int(x, 16) for x in span.split("-"))
            try:
                data = os.pread(fd, min(hi - lo, 1 << 22), lo)
            except OSError:
                continue
            total += len(data)
            found.update(n for n in needles if n in data)
    finally:
        os.close(fd)
    return f"read {total} bytes; found: " + ", ".join(sorted(n.decode() for n in found))


def _read_file(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(200).decode("latin-1")


def _write(path: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"escaped")
    os.close(fd)
    return "written"


def _connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return "connected"


def survey(job: dict[str, Any]) -> dict[str, Any]:
    """The sandbox as seen from inside.

    ``job`` may name host ``paths`` to read, paths to ``write``, a ``port`` on 127.0.0.1 to
    connect to, and ``needles`` (strings) to look for in other processes' memory.
    """
    result: dict[str, Any] = {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
        "cap_eff": _try(lambda: _status_field("CapEff")),
        "no_new_privs": _try(lambda: _status_field("NoNewPrivs")),
        "seccomp": _try(lambda: _status_field("Seccomp")),
        "environ": dict(os.environ),
        "proc": _proc_through_dir_fd([str(n).encode() for n in job.get("needles", [])]),
        "uid_map": _try(lambda: _read_file("/proc/self/uid_map").split()),
        "hostname": socket.gethostname(),
        "root_entries": sorted(os.listdir("/")),
    }
    paths = [str(p) for p in job.get("paths", [])]
    result["read"] = {p: _try(partial(_read_file, p)) for p in paths}
    result["write"] = {p: _try(partial(_write, p)) for p in job.get("write", [])}
    if "port" in job:
        result["connect"] = _try(lambda: _connect(int(job["port"])))
    return result


def check_latency(n: int = 8) -> dict[str, float]:
    """Seconds per correctness check of the baseline (dev suite, no cache): the first warm
    check (starting the sandbox), the median and minimum of ``n`` more, and one one-shot
    check (a sandbox started and stopped for it)."""
    import statistics
    import tempfile
    import time
    from pathlib import Path

    from ctxmem.workloads.kernel.correctness import CorrectnessChecker
    from ctxmem.workloads.kernel.sandbox import SandboxLimits
    from ctxmem.workloads.kernel.workspace import Workspace

    with tempfile.TemporaryDirectory() as folder:
        ws = Workspace.create(Path(folder) / "ws")
        limits = SandboxLimits(timeout_s=120.0)
        source = (ws.root / "kernel.py").read_text()

        def timed(checker: CorrectnessChecker, text: str) -> float:
            started = time.perf_counter()
            result = checker.check(source=text, use_cache=False)
            if not result.passed:
                raise RuntimeError(result.render())
            return time.perf_counter() - started

        warm = CorrectnessChecker(ws, limits=limits, warm=True)
        first = timed(warm, source)
        times = [timed(warm, source + f"\n# {i}\n") for i in range(n)]
        one_shot = timed(CorrectnessChecker(ws, limits=limits, warm=False), source)
    return {"first_warm_s": round(first, 3), "warm_median_s": round(statistics.median(times), 3),
            "warm_min_s": round(min(times), 3), "one_shot_s": round(one_shot, 3), "n": n}


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    from ctxmem.workloads.kernel.sandbox import run_in_sandbox

    if sys.argv[1:2] == ["--latency"]:
        print(json.dumps(check_latency(int(sys.argv[2]) if len(sys.argv) > 2 else 8)))
        raise SystemExit(0)
    with tempfile.TemporaryDirectory() as empty:
        outcome = run_in_sandbox("ctxmem.workloads.kernel.probe:survey", {},
                                 workspace=Path(empty), warm=False, audit_hook=False)
    print(json.dumps({"status": outcome.status, "isolation": outcome.report.get("isolation"),
                      "survey": outcome.report.get("result")}, indent=2, default=str)[:20000])
