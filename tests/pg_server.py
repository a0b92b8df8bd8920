"""A throwaway PostgreSQL server for the tests and benchmarks: initdb + pg_ctl in a temp dir.

:func:`start` finds the server binaries (``$PG_BIN``, ``pg_config --bindir``, the Debian
layout ``/usr/lib/postgresql/<version>/bin``, then ``PATH``), makes a cluster in a fresh
temp dir, and starts it on a free loopback port with its socket in that dir. PostgreSQL
refuses to run as root, and CI runs the tests as root: there the binaries run as the
``postgres`` system user (Debian's package creates it) through ``runuser``. When no server
can start, :class:`Unavailable` says why in one line (the tests skip with it; CI sets
``CTXMEM_REQUIRE_POSTGRES=1`` to make that a failure instead).

Each test gets its own schema (:meth:`Server.fresh_url`): a ``search_path`` option in the
URL, so a store sees an empty database without the ~0.3 s a ``CREATE DATABASE`` costs.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class Unavailable(Exception):
    """No PostgreSQL server can start here; the message says why and how to get one."""


def _bindir() -> Path:
    env = os.environ.get("PG_BIN")
    candidates = [Path(env)] if env else []
    cfg = shutil.which("pg_config")
    if cfg:
        try:
            out = subprocess.run([cfg, "--bindir"], capture_output=True, text=True, timeout=10).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if (c / "initdb").is_file() and (c / "pg_ctl").is_file():
            return c
    raise Unavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found: install the Debian 'postgresql' "
        "package (scripts/install-system-deps.sh) or set PG_BIN"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running cluster; :meth:`stop` removes it and its files."""

    root: Path
    port: int
    bindir: Path
    as_user: list[str]
    schemas: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def fresh_url(self) -> str:
        """The URL of a new, empty schema in this server's database."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        return f"{self.url}?options=-csearch_path%3D{name}"

    def stop(self) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, fsync: bool = False, synchronous_commit: bool = True) -> Server:
    """Start a fresh server. ``fsync=False`` (tests): the server's own crash safety is not
    under test and fsync costs seconds on a shared disk; the benchmark passes True."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"psycopg is not installed: pip install 'ctxmem[postgres]' ({exc})") from None
    bindir = _bindir()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="ctxmem-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            raise Unavailable("running as root and there is no 'postgres' user to run the server as "
                              "(the Debian 'postgresql' package creates it)") from None
        if runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            raise Unavailable("running as root and 'runuser' (util-linux) is missing: cannot drop to 'postgres'")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = [runuser, "-u", "postgres", "--"]
    root.chmod(0o700)
    data = root / "data"
    init = subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        capture_output=True, text=True, timeout=300,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        tail = (init.stderr or init.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise Unavailable(f"initdb failed: {tail[0]}")
    last = ""
    for _ in range(3):  # a free port can be taken between the probe and the bind
        port = _free_port()
        opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                f"-c fsync={'on' if fsync else 'off'} -c synchronous_commit={'on' if synchronous_commit else 'off'} "
                "-c shared_buffers=128MB")
        run = subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
             "-o", opts, "start"],
            capture_output=True, text=True, timeout=120,
        )
        if run.returncode == 0:
            return Server(root, port, bindir, as_user)
        try:
            last = (root / "log").read_text().strip().splitlines()[-1]
        except (OSError, IndexError):
            last = (run.stderr or run.stdout).strip()
    shutil.rmtree(root, ignore_errors=True)
    raise Unavailable(f"pg_ctl could not start the server: {last}")


# --------------------------------------------------------------------------- for pytest

_server: Server | None = None
_unavailable: str | None = None


def shared() -> Server:
    """This test process's server, started on first use and stopped at exit. Skips the
    calling test when none can start, or fails it under ``CTXMEM_REQUIRE_POSTGRES=1`` (CI)."""
    import atexit

    import pytest

    global _server, _unavailable
    if _server is None and _unavailable is None:
        try:
            _server = start()
            atexit.register(_server.stop)
        except Unavailable as exc:
            _unavailable = str(exc)
    if _server is None:
        if os.environ.get("CTXMEM_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL is required here (CTXMEM_REQUIRE_POSTGRES=1): {_unavailable}")
        pytest.skip(f"no PostgreSQL server: {_unavailable}")
    return _server
