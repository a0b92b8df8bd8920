"""The warm worker: one long-lived sandboxed process that has already imported torch + triton.

A one-shot check spends about half its time importing torch and triton in a fresh child.
:class:`WarmWorker` starts ``python -I _runner.py --serve`` once — with the same
environment, resource limits and process-group isolation as the one-shot child (see
``sandbox.py``) — and sends it one request per check over a pipe. The server runs the
one-shot path's :func:`_runner.supervise` per request: it forks the candidate's process
(audit hook, NaN guard bands, raw outputs) and then the judge, which computes the expected
outputs and the verdict; the server itself never loads candidate code nor computes an
expected output, so no child inherits one, and both children close the server's pipes.
So results are identical to the one-shot path; only ``import_seconds`` differs (0.0).

Lifecycle:

* started lazily on the first check, shared by every checker of this process that uses the
  same :class:`SandboxLimits` (the limits are fixed when the server starts);
* a request that times out, a child that dies of a signal, or a server that stops
  answering recycles the server (the next check starts a fresh one); so does every
  ``max_jobs``-th check, to bound whatever slowly accumulates in a long-lived process;
* when the server cannot be started or fails mid-request, :meth:`WarmWorker.run` returns
  ``None`` and the caller falls back to the one-shot child;
* every server is killed at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ctxmem.workloads.kernel.sandbox import RUNNER, SandboxLimits, _child_env, _limiter

START_TIMEOUT_S = 120.0
# How long past the job's own timeout the parent waits for the server's reply before it
# declares the server hung.
REPLY_GRACE_S = 20.0


@dataclass(frozen=True, slots=True)
class WorkerReply:
    returncode: int
    timed_out: bool
    wall_s: float


class WarmWorker:
    """A fork server for sandboxed checks (one request at a time)."""

    def __init__(self, limits: SandboxLimits, *, max_jobs: int = 100):
        self.limits = limits
        self.max_jobs = max_jobs
        self.jobs_served = 0  # by the current server
        self.starts = 0
        self.import_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._lock = threading.Lock()
        self._home = Path(tempfile.mkdtemp(prefix="ctxmem-warm-"))
        self._log: IO[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.alive and self._proc is not None else None

    def _start(self) -> bool:
        self._stop()
        self._log = (self._home / "server.log").open("ab")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(RUNNER), "--serve"],
            cwd=self._home,
            env=_child_env(self._home / "state"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            preexec_fn=_limiter(self.limits),
            start_new_session=True,
        )
        self._buffer = b""
        self.jobs_served = 0
        self.starts += 1
        line = self._readline(START_TIMEOUT_S)
        if line is None:
            self._stop()
            return False
        try:
            hello = json.loads(line)
        except ValueError:
            self._stop()
            return False
        self.import_seconds = hello.get("import_seconds")
        return bool(hello.get("ready"))

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

    def close(self) -> None:
        with self._lock:
            self._stop()

    def run(self, *, job_path: Path, result_path: Path, stdout_path: Path, stderr_path: Path,
            env: dict[str, str], cwd: Path, timeout_s: float) -> WorkerReply | None:
        """Run one job; ``None`` when the worker could not (the caller falls back)."""
        with self._lock:
            if (not self.alive or self.jobs_served >= self.max_jobs) and not self._start():
                return None
            assert self._proc is not None and self._proc.stdin is not None
            request = {"job": str(job_path), "result": str(result_path),
                       "stdout": str(stdout_path), "stderr": str(stderr_path),
                       "env": env, "cwd": str(cwd), "timeout": timeout_s}
            try:
                self._proc.stdin.write(json.dumps(request).encode() + b"\n")
                self._proc.stdin.flush()
            except OSError:
                self._stop()
                return None
            line = self._readline(timeout_s + REPLY_GRACE_S)
            if line is None:
                self._stop()
                return None
            self.jobs_served += 1
            data: dict[str, Any] = json.loads(line)
            reply = WorkerReply(returncode=int(data["returncode"]),
                                timed_out=bool(data["timed_out"]), wall_s=float(data["wall_s"]))
            if reply.timed_out or reply.returncode < 0:
                self._stop()  # recycled: the next check starts a fresh server
            return reply


_WORKERS: dict[SandboxLimits, WarmWorker] = {}
_WORKERS_LOCK = threading.Lock()


def shared_worker(limits: SandboxLimits) -> WarmWorker:
    """The process-wide warm worker for ``limits``."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(limits)
        if worker is None:
            worker = _WORKERS[limits] = WarmWorker(limits)
        return worker


def close_all() -> None:
    """Stop every warm worker of this process (also registered with ``atexit``)."""
    with _WORKERS_LOCK:
        workers = list(_WORKERS.values())
    for worker in workers:
        worker.close()


atexit.register(close_all)
