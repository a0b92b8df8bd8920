"""The sandbox box: one long-lived bubblewrap sandbox holding a warm zygote.

A check spends about half its time importing torch and triton in a fresh interpreter.
:class:`Box` starts ``bwrap … python -I _runner.py --serve`` once (see ``bwrap.py`` for
the command line, ``_runner.py`` for the zygote), and serves one request at a time:

1. :meth:`Box.execute` creates a fresh folder ``<box>/c<random>`` on the host (visible as
   ``/box/c<random>`` inside), with ``ws/`` (a copy of the workspace), ``tmp/``, ``home/``
   and ``triton/``, and opens a descriptor on it *before* anything runs;
2. the caller's ``prepare`` writes the job there; the zygote forks a child that runs it
   (after its seccomp filter and audit hook) and, once it has ended, kills whatever is
   left in the sandbox's PID namespace;
3. the caller's ``collect`` reads the results through the descriptor (never following a
   link: see ``sandbox.read_box_file``), and the whole box folder is emptied — the check
   folder and anything a candidate left elsewhere in ``/box`` — before the next request.

Lifecycle: started lazily, shared by every checker and instrumented run of this process
(``shared_box``; limits travel with each request); a zygote that dies or stops answering
is stopped, and the next request starts a fresh box; every ``max_jobs``-th request starts a
fresh one too, to bound whatever slowly accumulates in a long-lived process. A timeout
does *not* recycle the box: the zygote kills the child and sweeps the namespace. All boxes
are killed at interpreter exit; ``--die-with-parent`` kills them if the harness dies first.

Without bubblewrap (only when the user accepted the risk, see ``sandbox.py``) the same
zygote runs as a plain child process in its own session, and the folder paths inside and
outside are the same.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import resource
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from ctxmem.workloads.kernel import bwrap

RUNNER = Path(__file__).with_name("_runner.py")
ZYGOTE_FILE_SIZE = 64 << 20  # the zygote writes nothing; a bound all the same
START_TIMEOUT_S = 120.0
# How long past the job's own timeout the harness waits for the zygote's reply before it
# declares the sandbox hung and kills it.
REPLY_GRACE_S = 20.0
T = TypeVar("T")


class BoxError(RuntimeError):
    """The sandbox could not be started, or stopped answering (a harness failure)."""


@dataclass(frozen=True, slots=True)
class WorkerReply:
    returncode: int
    timed_out: bool
    wall_s: float
    leftovers_killed: int = 0
    # Refusals the audit hook sent to the zygote as they happened (a channel the candidate
    # can write to but not take back), and whether the candidate flooded that channel.
    violations: tuple[dict[str, str], ...] = ()
    flooded: bool = False


@dataclass(frozen=True, slots=True)
class CheckFolder:
    host: Path  # the folder on the host
    inside: str  # the same folder as the sandbox sees it
    fd: int  # a descriptor opened before anything ran in it


def _zygote_limits(fsize: int) -> Callable[[], None]:
    def apply() -> None:  # between fork and exec of bwrap (or the unsandboxed zygote)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


class Box:
    """One sandbox with a warm zygote; one request at a time."""

    def __init__(self, *, sandboxed: bool = True, max_jobs: int = 500):
        self.sandboxed = sandboxed
        self.max_jobs = max_jobs
        self.jobs_served = 0  # by the current zygote
        self.starts = 0
        self.import_seconds: float | None = None
        self.layers: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._dir: Path | None = None
        self._log: IO[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive and self._proc is not None else None

    def _start(self) -> None:
        from ctxmem.workloads.kernel import _seccomp

        self._stop()
        self._dir = Path(tempfile.mkdtemp(prefix="ctxmem-box-"))
        self._log = tempfile.TemporaryFile(prefix="ctxmem-box-log-")  # noqa: SIM115
        command = [os.path.realpath(sys.executable), "-I", "-B", str(RUNNER), "--serve",
                   str(bwrap.ctxmem_root())]
        pass_fds: tuple[int, ...] = ()
        with tempfile.TemporaryFile() as bpf:
            if self.sandboxed:
                binary = bwrap.bwrap_path()
                if binary is None:
                    raise BoxError("bwrap disappeared")
                _seccomp.sandbox_filter_bpf(bpf)
                bpf.flush()
                bpf.seek(0)
                pass_fds = (bpf.fileno(),)
                argv = bwrap.bwrap_argv(binary, self._dir, bpf.fileno(), [*command, "--sweep"])
                env = bwrap.sandbox_env(f"{bwrap.BOX}/.zygote")
            else:
                argv = command
                env = bwrap.sandbox_env(str(self._dir / ".zygote"))
            self._proc = subprocess.Popen(
                argv, cwd=self._dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._log, pass_fds=pass_fds, start_new_session=True,
                preexec_fn=_zygote_limits(ZYGOTE_FILE_SIZE),
            )
        self._buffer = b""
        self.jobs_served = 0
        self.starts += 1
        line = self._readline(START_TIMEOUT_S)
        try:
            hello = json.loads(line) if line is not None else {}
        except ValueError:
            hello = {}
        if not hello.get("ready"):
            log = self._log_tail()
            self._stop()
            raise BoxError("the kernel sandbox did not start: " + (log or "no output"))
        self.import_seconds = hello.get("import_seconds")

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read()[-2000:].decode("utf-8", "replace").strip()

    def _readline(self, timeout: float) -> bytes | None:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _new_folder(self) -> CheckFolder:
        assert self._dir is not None
        name = "c" + secrets.token_hex(8)
        host = self._dir / name
        host.mkdir(mode=0o700)
        for sub in ("ws", "tmp", "home", "triton"):
            (host / sub).mkdir()
        fd = os.open(host, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        inside = f"{bwrap.BOX}/{name}" if self.sandboxed else str(host)
        return CheckFolder(host=host, inside=inside, fd=fd)

    def _empty(self) -> None:
        """Remove everything in the box folder (rmtree does not follow links)."""
        if self._dir is None:
            return
        for entry in os.scandir(self._dir):
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()

    def execute(self, make_request: Callable[[CheckFolder], dict[str, Any]],
                collect: Callable[[CheckFolder, WorkerReply | None], T], *, timeout_s: float) -> T:
        """Run one request in a fresh check folder; ``collect`` sees the reply (None: the box died).

        ``make_request`` writes the job into the folder and returns the request for the
        zygote (kind, environment, limits, …).
        """
        with self._lock:
            if not self.alive or self.jobs_served >= self.max_jobs:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            folder = self._new_folder()
            try:
                message = {**make_request(folder), "dir": folder.inside,
                           "timeout": timeout_s}
                line = None
                try:
                    self._proc.stdin.write(json.dumps(message).encode() + b"\n")
                    self._proc.stdin.flush()
                    line = self._readline(timeout_s + REPLY_GRACE_S)
                except OSError:
                    line = None
                reply = None
                if line is not None:
                    data = json.loads(line)
                    reply = WorkerReply(returncode=int(data["returncode"]),
                                        timed_out=bool(data["timed_out"]),
                                        wall_s=float(data["wall_s"]),
                                        leftovers_killed=int(data.get("leftovers_killed", 0)),
                                        violations=tuple(data.get("violations", ())),
                                        flooded=bool(data.get("flooded")))
                    self.jobs_served += 1
                else:
                    self._stop()  # hung or dead: the whole namespace goes with it
                return collect(folder, reply)
            finally:
                os.close(folder.fd)
                self._empty()


_BOXES: dict[bool, Box] = {}
_BOXES_LOCK = threading.Lock()


def shared_box(*, sandboxed: bool = True) -> Box:
    """The process-wide warm box (one with bubblewrap, one without when that was allowed).

    Limits are per request (the child sets its own rlimits; the zygote enforces each
    request's wall clock), so checks and instrumented runs with different limits share it.
    """
    with _BOXES_LOCK:
        box = _BOXES.get(sandboxed)
        if box is None:
            box = _BOXES[sandboxed] = Box(sandboxed=sandboxed)
        return box


def close_all() -> None:
    """Stop every box of this process (also registered with ``atexit``)."""
    with _BOXES_LOCK:
        boxes = list(_BOXES.values())
    for box in boxes:
        box.close()


atexit.register(close_all)
