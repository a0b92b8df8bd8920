"""Hostile kernels stay in their box, and their verdict stays honest.

Each attack kernel is the baseline's signature with a ``launch()`` that runs the attack and
computes nothing, so any PASS would be dishonest. Each test asserts containment (nothing
changed or reached on the host) and the verdict (never a pass; a violation where the
sandbox saw one). Tests that need bubblewrap skip where it cannot start, and then
``test_without_bwrap_nothing_runs_unless_allowed`` checks the refusal path instead.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctxmem.workloads.kernel import CorrectnessChecker, SandboxLimits, Workspace, bwrap
from ctxmem.workloads.kernel.correctness import DEFAULT_CONFIG, ResultCache, cache_key_file
from ctxmem.workloads.kernel.sandbox import SandboxUnavailableError, run_in_sandbox
from ctxmem.workloads.kernel.worker import CheckFolder

LIMITS = SandboxLimits(timeout_s=60.0)
REASON = bwrap.probe()
needs_bwrap = pytest.mark.skipif(REASON is not None, reason=f"no sandbox here: {REASON}")
SURVEY = "ctxmem.workloads.kernel.probe:survey"
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-planted-" + uuid.uuid4().hex,
           "OPENAI_API_KEY": "sk-planted-" + uuid.uuid4().hex,
           "HTTPS_PROXY": "http://agent:pw-planted-" + uuid.uuid4().hex[:12] + "@proxy:3128"}


def _kernel(body: str) -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return "import torch\n\n\ndef launch(q, k_new, v_new, out, *args, **kwargs):\n" + lines + "\n"


@pytest.fixture
def checker(workspace: Workspace) -> CorrectnessChecker:
    return CorrectnessChecker(workspace, limits=LIMITS)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "host" / "victim.txt"
    path.parent.mkdir()
    path.write_text("original\n")
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    with sock:
        yield sock


def _no_connection(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except TimeoutError:
        return True
    conn.close()
    return False


def _forbidden_syscall(result: object) -> None:
    text = result.render()  # type: ignore[attr-defined]
    assert not result.passed, text  # type: ignore[attr-defined]
    assert result.status == "sandbox_violation", text  # type: ignore[attr-defined]
    assert "forbidden system call refused" in text, text


# -- processes: nsenter, setsid ------------------------------------------------------------

_FORK_EXEC = """
import _posixsubprocess, os
def spawn(argv, setsid):
    r, w = os.pipe()
    argv = [a.encode() for a in argv]
    # Tried with each arity CPython has used, as an attacker would.
    for tail in ([-1, None, True], [-1, None], [None]):
        head = [argv, [argv[0]], True, (), None, None, -1, -1, -1, -1, -1, -1, r, w, True,
                setsid, -1, None, None, None]
        try:
            return _posixsubprocess.fork_exec(*(head + tail))
        except TypeError:
            continue
"""


@needs_bwrap
def test_nsenter_through_posixsubprocess_is_contained(
    checker: CorrectnessChecker, workspace: Workspace, victim: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]
    cache = workspace.state_dir / "results.sqlite"
    script = (f"echo pwned > {victim}; echo x > /tmp/escaped-{port}; "
              f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}))\"; "
              f"sqlite3 {cache} \"INSERT INTO results VALUES ('k', 1, '{{}}', NULL)\"")
    source = _kernel(_FORK_EXEC + f"""
for target in ("1", str(os.getppid())):
    try:
        spawn(["/usr/bin/nsenter", "-t", target, "-m", "-n", "-p", "--", "/bin/sh", "-c", {script!r}], False)
    except Exception:
        pass
""")
    result = checker.check(source=source)
    _forbidden_syscall(result)
    assert victim.read_text() == "original\n"
    assert not Path(f"/tmp/escaped-{port}").exists()
    assert _no_connection(listener)
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM results WHERE key = 'k'").fetchone()[0] == 0


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


@needs_bwrap
def test_setsid_survivor_does_not_outlive_the_check(checker: CorrectnessChecker) -> None:
    marker = "survivor-" + uuid.uuid4().hex[:8]
    source = _kernel(_FORK_EXEC + f"""
try:
    spawn(["/bin/sh", "-c", "exec sleep 1000 # {marker}"], True)
except Exception:
    pass
""")
    result = checker.check(source=source)
    _forbidden_syscall(result)
    # And through os.fork + os.setsid (the audit hook refuses the fork first).
    forked = checker.check(source=_kernel(f"""
import os, time
if os.fork() == 0:
    os.setsid()
    time.sleep(1000)  # {marker}
"""))
    assert forked.status == "sandbox_violation" and not forked.passed
    assert "starting a process refused: os.fork" in forked.render()
    assert _host_processes_with(marker) == []


@needs_bwrap
def test_the_sweep_kills_every_leftover_process_of_the_namespace(tmp_path: Path) -> None:
    # The zygote's sweep on its own, in a real bwrap PID namespace, against a setsid'd
    # grandchild that also ignores SIGTERM/SIGHUP: after the sweep only init and the
    # sweeper are left.
    root = str(bwrap.ctxmem_root())
    code = f"""
import os, sys, time, signal, json
sys.path.insert(0, {root!r})
from ctxmem.workloads.kernel._runner import sweep, _alive_others
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        time.sleep(1000)
    os._exit(0)
time.sleep(0.5)
before = _alive_others({{1, os.getpid()}})
killed = sweep({{1, os.getpid()}})
print(json.dumps({{"before": before, "killed": killed, "after": _alive_others({{1, os.getpid()}})}}))
"""
    box = tmp_path / "box"
    box.mkdir()
    binary = bwrap.bwrap_path()
    assert binary is not None
    argv = bwrap.bwrap_argv(binary, box, None, [os.path.realpath(sys.executable), "-I", "-c", code])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert len(got["before"]) == 1 and got["killed"] == 1 and got["after"] == []


# -- secrets and /proc -------------------------------------------------------------------


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    return SECRETS


def _needles(planted: dict[str, str]) -> list[str]:
    return [v.split("@")[0].split(":")[-1] for v in planted.values()]


@needs_bwrap
def test_proc_through_dir_fd_shows_no_secret_and_no_harness(
    planted: dict[str, str], tmp_path: Path
) -> None:
    # The OS layers alone (audit hook off), a sandbox started with the keys in the harness's
    # environment: every process visible through a /proc directory descriptor, their
    # environ, cmdline and memory.
    outcome = run_in_sandbox(SURVEY, {"needles": _needles(planted)}, workspace=tmp_path,
                             limits=LIMITS, warm=False, audit_hook=False)
    assert outcome.status == "ok", outcome
    seen = outcome.report["result"]
    text = json.dumps(seen)
    for needle in _needles(planted):
        assert needle not in text
    assert set(seen["proc"]) == {"1"}  # the zygote is init: nothing of the host, no bwrap
    assert seen["proc"]["1"]["mem"].startswith("refused")  # the zygote is not dumpable
    assert seen["proc"]["1"]["environ"].startswith("refused")
    assert set(seen["environ"]) <= {"PATH", "HOME", "TMPDIR", "USER", "LOGNAME", "TRITON_INTERPRET",
                                    "TRITON_CACHE_DIR", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                    "OPENBLAS_NUM_THREADS", "MALLOC_ARENA_MAX", "LC_ALL",
                                    "PYTHONDONTWRITEBYTECODE", "no_proxy", "http_proxy",
                                    "https_proxy"}


@needs_bwrap
def test_namespaces_uid_capabilities_and_host_view(tmp_path: Path, workspace: Workspace,
                                                   victim: Path, listener: socket.socket) -> None:
    key_file = cache_key_file()
    outcome = run_in_sandbox(
        SURVEY, {"paths": [str(victim), str(workspace.root / "kernel.py"),
                           str(workspace.state_dir / "results.sqlite"), str(key_file),
                           "/etc/shadow", "/root/.bashrc"],
                 "write": [str(victim), "/usr/pwned", "/tmp/pwned", "/box/../pwned"],
                 "port": listener.getsockname()[1]},
        workspace=tmp_path, limits=LIMITS, audit_hook=False)
    seen = outcome.report["result"]
    assert (seen["uid"], seen["gid"]) == (65534, 65534)
    assert seen["cap_eff"] == "0000000000000000"
    assert seen["no_new_privs"] == "1" and seen["seccomp"] == "2"
    assert seen["hostname"] == "ctxmem-sandbox"
    assert "home" not in seen["root_entries"] and "var" not in seen["root_entries"]
    assert all(v.startswith("refused") for v in seen["read"].values()), seen["read"]
    assert all(v.startswith("refused") for v in seen["write"].values()), seen["write"]
    assert seen["connect"].startswith("refused")
    assert victim.read_text() == "original\n" and _no_connection(listener)


@needs_bwrap
def test_planted_api_keys_never_reach_any_tool_output(
    planted: dict[str, str], workspace: Workspace
) -> None:
    from ctxmem.workloads.kernel.worker import close_all

    close_all()  # the next box starts with the keys in this process's environment
    from ctxmem.workloads.kernel.kernel_tools import KernelTools

    tools = KernelTools(workspace, limits=LIMITS)
    hunt = _kernel("""
import os
found = [repr(dict(os.environ))]
for pid in os.listdir('/proc'):
    for leaf in ('environ', 'cmdline'):
        try:
            found.append(open(f'/proc/{pid}/{leaf}', 'rb').read().decode('latin-1'))
        except BaseException as exc:
            found.append(repr(exc))
raise RuntimeError('\\n'.join(found))
""")
    (workspace.root / "kernel.py").write_text(hunt)
    outputs = [tools.call(name, {}) for name in ("check", "compile", "submit")]
    texts = [text for text, _ in outputs]
    assert "RuntimeError" in texts[0] or "SANDBOX VIOLATION" in texts[0], texts[0]
    blob = "\n".join(texts).encode()
    blob += (workspace.state_dir / "results.sqlite").read_bytes()
    for needle in _needles(planted):
        assert needle.encode() not in blob
    assert "SCORE: final speedup 0.00x" in texts[2]


@needs_bwrap
def test_proc_dir_fd_is_refused_by_the_hook_too(checker: CorrectnessChecker) -> None:
    result = checker.check(source=_kernel("""
fd = os.open('/proc', os.O_RDONLY | os.O_DIRECTORY)
print(os.read(os.open('1/environ', os.O_RDONLY, dir_fd=fd), 100))
""".replace("fd = ", "import os\nfd = ", 1)))
    assert result.status == "sandbox_violation" and not result.passed
    assert "reading another process refused: /proc" in result.render()


# -- writes that the audit hook cannot see, or sees only in part ---------------------------


@needs_bwrap
def test_os_open_with_dir_fd(checker: CorrectnessChecker, victim: Path) -> None:
    result = checker.check(source=_kernel(f"""
import os
for folder in ('/', {str(victim.parent)!r}, '..'):
    try:
        fd = os.open(folder, os.O_RDONLY)
        w = os.open('victim.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd)
        os.write(w, b'pwned')
    except BaseException:
        pass
"""))
    assert result.status == "sandbox_violation" and not result.passed
    assert "opening a directory outside the workspace refused" in result.render()
    assert victim.read_text() == "original\n"


@needs_bwrap
def test_torch_from_file_shared(checker: CorrectnessChecker, workspace: Workspace, victim: Path) -> None:
    # torch opens the file in C: no audit event. Only the mount namespace stands here.
    targets = [str(victim), str(workspace.root / "kernel.py"),
               str(workspace.state_dir / "results.sqlite")]
    result = checker.check(source=_kernel(f"""
for path in {targets!r}:
    try:
        t = torch.from_file(path, shared=True, size=8, dtype=torch.uint8)
        t.fill_(33)
    except BaseException:
        pass
"""))
    text = result.render()
    assert not result.passed and "FAILED 6/6" in text, text  # computed nothing: an honest FAIL
    assert victim.read_text() == "original\n"
    assert "launch" in (workspace.root / "kernel.py").read_text()


@needs_bwrap
def test_sqlite3_connect_to_the_cache_cannot_forge_a_pass(checker: CorrectnessChecker,
                                                          workspace: Workspace) -> None:
    noop = _kernel("pass")
    key = checker.cache_key(noop, DEFAULT_CONFIG, 0, "dev")
    forged = {"status": "ok", "cases": [], "cases_total": 0}
    source = _kernel(f"""
import sqlite3, json
for path in ({str(workspace.state_dir / 'results.sqlite')!r}, '.ctxmem/results.sqlite',
             '../.ctxmem/results.sqlite'):
    try:
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, eval_id INT, payload TEXT, mac TEXT)")
        db.execute("INSERT OR REPLACE INTO results VALUES (?, 1, ?, NULL)", ({key!r}, {json.dumps(forged)!r}))
        db.commit()
    except BaseException:
        pass
""")
    result = checker.check(source=source)
    assert result.status == "sandbox_violation" and not result.passed
    assert "opening a database outside the workspace refused" in result.render()
    with sqlite3.connect(workspace.state_dir / "results.sqlite") as db:
        assert db.execute("SELECT count(*) FROM results WHERE key = ?", (key,)).fetchone()[0] == 0
    assert not checker.check(source=noop).passed


@needs_bwrap
def test_os_link_with_src_dir_fd(checker: CorrectnessChecker, workspace: Workspace, victim: Path) -> None:
    result = checker.check(source=_kernel(f"""
import os
try:
    fd = os.open({str(victim.parent)!r}, os.O_RDONLY)
except BaseException:
    fd = None
for src, dirfd in (('victim.txt', fd), ({str(victim)!r}, None), ('kernel.py', None)):
    try:
        os.link(src, 'stolen.txt', src_dir_fd=dirfd)
        open('stolen.txt', 'w').write('pwned')
    except BaseException:
        pass
"""))
    assert result.status == "sandbox_violation" and not result.passed
    assert "hard link refused" in result.render()
    assert victim.read_text() == "original\n"
    assert not (workspace.root / "stolen.txt").exists()


# -- the verdict ---------------------------------------------------------------------------


@needs_bwrap
def test_a_refusal_cannot_be_erased_from_the_record(checker: CorrectnessChecker, kernel_source: str) -> None:
    # A correct kernel that tries something forbidden, swallows the refusal, then wipes the
    # audit hook's list of violations (and so its report): the zygote already has it.
    source = kernel_source + """
import gc as _gc
try:
    open('/usr/pwned', 'w')
except BaseException:
    pass
for _obj in _gc.get_objects():
    if type(_obj).__name__ == 'Sandbox':
        _obj.violations.clear()
"""
    result = checker.check(source=source)
    text = result.render()
    assert result.status == "sandbox_violation" and not result.passed, text
    assert "file write outside the workspace refused: /usr/pwned" in text



def test_symlinked_or_hard_linked_outputs_are_not_followed(tmp_path: Path, victim: Path) -> None:
    from ctxmem.workloads.kernel.sandbox import open_box_file, read_box_file

    folder = tmp_path / "check"
    folder.mkdir()
    os.symlink(victim, folder / "report.json")
    os.link(victim, folder / "outputs.bin")
    (folder / "stdout.txt").write_text("fine")
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        box = CheckFolder(host=folder, inside=str(folder), fd=fd)
        assert read_box_file(box, "report.json") is None
        assert open_box_file(box, "outputs.bin") is None
        assert read_box_file(box, "stdout.txt") == b"fine"
        # The folder itself swapped for a link after the run: the descriptor still points
        # at the original folder.
        folder.rename(tmp_path / "moved")
        os.symlink(victim.parent, folder)
        assert read_box_file(box, "stdout.txt") == b"fine"
        assert read_box_file(box, "victim.txt") is None
    finally:
        os.close(fd)


def test_forged_pass_row_in_the_cache_is_ignored(workspace: Workspace, tmp_path: Path) -> None:
    checker = CorrectnessChecker(workspace, limits=LIMITS)
    noop = _kernel("pass")
    key = checker.cache_key(noop, DEFAULT_CONFIG, 0, "dev")
    honest = checker.check()
    assert honest.passed, honest.render()
    payload = honest.to_dict()
    for k in ("eval_id", "cached_from", "passed", "eval"):
        del payload[k]
    payload["source_sha"] = "forged"
    text = json.dumps(payload)
    forger = ResultCache(tmp_path / "other.sqlite", key=b"k" * 32)  # a key that is not the user's
    with sqlite3.connect(checker.cache.path) as db:
        db.execute("INSERT OR REPLACE INTO results VALUES (?, 99, ?, NULL)", (key, text))
        assert checker.cache.get(key) is None  # no MAC
        db.execute("UPDATE results SET mac = ? WHERE key = ?", (forger._mac(key, 99, text), key))
    assert checker.cache.get(key) is None  # a MAC under another key
    result = checker.check(source=noop)
    assert result.cached_from is None and not result.passed, result.render()
    # The real result replaced the forged row and verifies.
    hit = checker.cache.get(key)
    assert hit is not None and hit[1]["status"] == "ok"


def test_forged_cache_row_does_not_survive_submit(workspace: Workspace) -> None:
    from ctxmem.workloads.kernel.kernel_tools import KernelTools

    tools = KernelTools(workspace, limits=LIMITS)
    noop = _kernel("pass")
    (workspace.root / "kernel.py").write_text(noop)
    checker = tools.checker
    honest = checker.check(source=(Workspace.create(workspace.root.parent / "clean").root
                                   / "kernel.py").read_text(), split="heldout", seed=tools.seed)
    assert honest.passed
    payload = honest.to_dict()
    for k in ("eval_id", "cached_from", "passed", "eval"):
        del payload[k]
    # Even a correctly authenticated row (as if the key had leaked) is not used at submit.
    key = checker.cache_key(noop, dict(DEFAULT_CONFIG), tools.seed, "heldout")
    checker.cache.put(key, 1, payload)
    text, _ = tools.call("submit", {})
    assert "held-out correctness: eval#" in text and "FAILED" in text, text
    assert "SCORE: final speedup 0.00x" in text


# -- where bubblewrap cannot start ----------------------------------------------------------


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CTXMEM_BWRAP", "/nonexistent/bwrap")
    monkeypatch.delenv("CTXMEM_KERNEL_ALLOW_UNSANDBOXED", raising=False)
    bwrap.probe.cache_clear()
    yield
    bwrap.probe.cache_clear()


def test_without_bwrap_nothing_runs_unless_allowed(no_bwrap: None, workspace: Workspace,
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "ran.txt"
    source = (workspace.root / "kernel.py").read_text() + f"\nopen({str(marker)!r}, 'w').close()\n"
    checker = CorrectnessChecker(workspace, limits=LIMITS)
    refused = checker.check(source=source)
    text = refused.render()
    assert refused.status == "unavailable" and not refused.passed and not refused.cases
    assert "NOT RUN" in text and "bubblewrap" in text and "CTXMEM_KERNEL_ALLOW_UNSANDBOXED=1" in text
    assert not marker.exists()
    with pytest.raises(SandboxUnavailableError, match="CTXMEM_KERNEL_ALLOW_UNSANDBOXED"):
        run_in_sandbox(SURVEY, {}, workspace=tmp_path, limits=LIMITS)
    # Not cached: once allowed, the same source runs, with the layers that remain.
    monkeypatch.setenv("CTXMEM_KERNEL_ALLOW_UNSANDBOXED", "1")
    allowed = checker.check()
    assert allowed.passed, allowed.render()
    layers = allowed.extra["isolation"]
    assert layers["bwrap"].startswith("off: bubblewrap (bwrap) is not installed")
    assert layers["seccomp"].startswith("loaded") and layers["audit_hook"] == "installed"


def test_unsandboxed_fallback_still_refuses_the_hook_only_escapes(
    no_bwrap: None, workspace: Workspace, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The escapes that once got past the audit hook alone: os.open(dir_fd=), os.link with
    # src_dir_fd, sqlite3.connect outside, a fork_exec'd process.
    monkeypatch.setenv("CTXMEM_KERNEL_ALLOW_UNSANDBOXED", "1")
    checker = CorrectnessChecker(workspace, limits=LIMITS)
    cache = workspace.state_dir / "results.sqlite"
    attacks = {
        "opening a directory outside the workspace": f"""
import os
fd = os.open({str(victim.parent)!r}, os.O_RDONLY)
os.write(os.open('victim.txt', os.O_WRONLY | os.O_TRUNC, dir_fd=fd), b'pwned')""",
        "hard link": f"""
import os
here = os.open('.', os.O_RDONLY)
os.link(os.path.relpath({str(victim)!r}), 'stolen.txt', src_dir_fd=here)""",
        "opening a database outside the workspace": f"""
import sqlite3
sqlite3.connect({str(cache)!r}).execute('DELETE FROM results').connection.commit()""",
        "forbidden system call": _FORK_EXEC + f"""
spawn(["/bin/sh", "-c", "echo pwned > {victim}"], True)""",
    }
    for kind, body in attacks.items():
        result = checker.check(source=_kernel("try:\n" + "\n".join(
            "    " + line for line in body.strip().splitlines()) + "\nexcept BaseException:\n    pass"))
        assert result.status == "sandbox_violation" and not result.passed, (kind, result.render())
        assert kind + " refused" in result.render(), (kind, result.render())
    assert victim.read_text() == "original\n"


_HOOK_OFF = """
import os, socket, sys
frame = sys._getframe()
while frame is not None and frame.f_code.co_name != "candidate_main":
    frame = frame.f_back
frame.f_locals["sandbox"].active = False  # the audit hook now lets everything through
seen = []
def attempt(label, fn):
    try:
        fn()
        seen.append(label + ": DONE")
    except OSError as exc:
        seen.append(f"{label}: refused {exc.errno}")
def shm():
    with open("/dev/shm/left-for-the-next-check", "w") as f:
        f.write("x")
def memfd():
    fd = os.memfd_create("outside-rlimit-as")
    os.write(fd, b"x" * (1 << 20))
attempt("dev-shm", shm)
attempt("dev-fifo", lambda: os.mkfifo("/dev/fifo"))
attempt("memfd", memfd)
attempt("tmp", lambda: open("/tmp/evil", "w"))
attempt("socket", lambda: socket.socket().connect(("127.0.0.1", 9)))
attempt("environ-of-init", lambda: open("/proc/1/environ", "rb").read())
raise RuntimeError("SEEN " + " | ".join(seen))
"""


@needs_bwrap
def test_with_the_hook_switched_off_the_os_layers_still_refuse(checker: CorrectnessChecker) -> None:
    """A correctness check runs any Python, so a candidate can walk its frames to the
    harness and switch the audit hook off; bwrap and seccomp must still refuse all of it:
    /dev is read-only (its /dev/shm once outlived a check), memfd_create answers EACCES
    (its pages are outside RLIMIT_AS), and the rest as before. (``/box`` itself stays
    writable: the harness empties it after every check.)"""
    result = checker.check(source=_kernel(_HOOK_OFF), use_cache=False)
    message = (result.error or {}).get("message", "")
    assert "SEEN " in message, result
    outcomes = dict(part.split(": ", 1) for part in message.split("SEEN ", 1)[1].strip().split(" | "))
    assert set(outcomes) == {"dev-shm", "dev-fifo", "memfd", "tmp", "socket", "environ-of-init"}
    assert not [k for k, v in outcomes.items() if not v.startswith("refused")], outcomes
    assert not result.passed
