"""The ``check`` tool: real correctness of a candidate kernel, in the Triton interpreter.

:class:`CorrectnessChecker.check` snapshots the candidate source, runs it in the sandbox
(``sandbox.py``) on a seed's suite of cases (``cases.py``) against the pristine reference,
and returns a :class:`CheckResult` — judged in a process the candidate never runs in, from
the raw buffers it left (see ``_runner.py``): a status, one :class:`CaseResult` per case that ran
(max abs error, mismatch count, NaNs, out-of-bounds writes, modified inputs), the error
text when the candidate raised, and the sandbox's verdict when it was stopped.
:meth:`CheckResult.render` prints it the way a correctness tool would, under a stable id
``eval#N``.

Results are cached in the workspace (``.ctxmem/results.sqlite``) by a hash of (source,
config, seed, split, tolerances, reference, case generator, memory limit). A repeated
check still gets a new ``eval#`` — each call is an evaluation the agent spent — and says
which earlier evaluation it repeats. Timeouts and crashes are not cached: they depend on
the machine's load, not only on the code.

The cache is never in the sandbox's view (the sandbox sees a copy of the workspace
without ``.ctxmem``), and it is not taken on faith anyway: every row carries an
HMAC-SHA256 under a per-user key kept outside any workspace (:func:`cache_key_file`), a
row that does not verify is ignored and replaced by a real result, and ``submit``
recomputes its held-out verdict instead of reading the cache (``use_cache=False``). Where
no sandbox can start, a check is ``unavailable`` ("NOT RUN", with the reason), never
cached, and nothing ran.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ctxmem.workloads.kernel.cases import CASES_VERSION, CaseSpec, Split, suite
from ctxmem.workloads.kernel.sandbox import SandboxLimits, Status, run_job
from ctxmem.workloads.kernel.workspace import KERNEL_FILE, Workspace, asset_path

CHECKER_VERSION = 2  # 2: verdicts judged outside the candidate's process

ConfigValue = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Tolerance:
    atol: float
    rtol: float


TOLERANCES: dict[str, Tolerance] = {
    "float16": Tolerance(atol=2e-3, rtol=1e-2),
    "float32": Tolerance(atol=1e-4, rtol=1e-4),
}

DEFAULT_CONFIG: dict[str, ConfigValue] = {
    "BLOCK_M": 32,
    "BLOCK_N": 32,
    "num_warps": 4,
    "num_stages": 1,
}

# Statuses that depend only on the inputs of the check, hence cacheable.
_CACHEABLE: frozenset[str] = frozenset(
    {"ok", "compile_error", "error", "memory_limit", "sandbox_violation"}
)


def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def config_text(config: Mapping[str, ConfigValue]) -> str:
    return " ".join(f"{k}={v}" for k, v in config.items())


@dataclass(frozen=True, slots=True)
class CaseResult:
    index: int
    name: str
    shape: str
    prefix_lens: tuple[int, ...]
    extend_lens: tuple[int, ...]
    passed: bool
    numel: int
    mismatches: int | None = None
    max_abs_err: float | None = None
    nan_count: int = 0
    oob_writes: int = 0
    inputs_modified: tuple[str, ...] = ()
    first_mismatch: dict[str, Any] | None = None
    seconds: float | None = None
    raised: bool = False

    def problem(self) -> str:
        """What went wrong, in a few words ("" when it passed)."""
        if self.raised:
            return "raised"
        bits = []
        if self.oob_writes:
            bits.append(f"{self.oob_writes} out-of-bounds writes (guard band)")
        if self.inputs_modified:
            bits.append("wrote into inputs: " + ",".join(self.inputs_modified))
        if self.mismatches:
            bits.append(f"{self.mismatches}/{self.numel} mismatched")
        if self.nan_count:
            bits.append(f"NaN in {self.nan_count}")
        return "; ".join(bits)


@dataclass(frozen=True, slots=True)
class CheckResult:
    eval_id: int
    status: Status
    display_name: str
    source_sha: str
    config: dict[str, ConfigValue]
    seed: int
    split: str
    cases_total: int
    cases: tuple[CaseResult, ...]
    error: dict[str, Any] | None = None
    violations: tuple[dict[str, str], ...] = ()
    detail: str = ""
    wall_s: float = 0.0
    memory_mb: int = 0
    cached_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (
            self.status == "ok"
            and len(self.cases) == self.cases_total
            and all(c.passed for c in self.cases)
        )

    @property
    def eval_ref(self) -> str:
        return f"eval#{self.eval_id}"

    @property
    def first_failure(self) -> CaseResult | None:
        return next((c for c in self.cases if not c.passed), None)

    @property
    def max_abs_err(self) -> float | None:
        errs = [c.max_abs_err for c in self.cases if c.max_abs_err is not None]
        return max(errs) if errs else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        d["eval"] = self.eval_ref
        return d

    def render(self) -> str:
        return render(self)


def _fmt_err(x: float | None) -> str:
    return "nan" if x is None else f"{x:.2e}"


def _lens(xs: tuple[int, ...]) -> str:
    text = ",".join(map(str, xs))
    return text if len(text) <= 14 else text[:13] + "…"


def render(r: CheckResult) -> str:
    """The text the ``check`` tool returns."""
    lines = [
        f"{r.eval_ref} · correctness · {r.display_name} (sha {r.source_sha[:8]}) · "
        f"{config_text(r.config)} · seed {r.seed} · {r.split} suite ({r.cases_total} cases)",
        "Triton interpreter (TRITON_INTERPRET=1) on CPU; interpreter times are not performance.",
        "tolerance: fp16 atol={:.0e} rtol={:.0e} · fp32 atol={:.0e} rtol={:.0e}".format(
            TOLERANCES["float16"].atol, TOLERANCES["float16"].rtol,
            TOLERANCES["float32"].atol, TOLERANCES["float32"].rtol,
        ),
    ]
    if r.cached_from is not None:
        lines.append(f"(identical source, config and seed as eval#{r.cached_from}: result reused)")
    if r.cases:
        lines.append("")
        lines.append(
            f"{'#':>3}  {'case':<22} {'shape':<34} {'prefix':<14} {'extend':<14} "
            f"{'max_abs_err':>11}  {'mismatched':>12}  result"
        )
        for c in r.cases:
            mism = "-" if c.mismatches is None else f"{c.mismatches}/{c.numel}"
            verdict = "PASS" if c.passed else "FAIL  " + c.problem()
            lines.append(
                f"{c.index:>3}  {c.name:<22} {c.shape:<34} {_lens(c.prefix_lens):<14} "
                f"{_lens(c.extend_lens):<14} {_fmt_err(None if c.nan_count else c.max_abs_err):>11}  {mism:>12}  {verdict}"
            )
        for c in r.cases:
            if c.first_mismatch:
                fm = c.first_mismatch
                got = "nan" if fm.get("got") is None else f"{fm['got']:.6g}"
                exp = "nan" if fm.get("expected") is None else f"{fm['expected']:.6g}"
                lines.append(
                    f"  case {c.index}: first mismatch at [token, head, dim] = {fm['index']}: "
                    f"got {got}, expected {exp}"
                )
                break
        lines.append("")
    lines.extend(_verdict_lines(r))
    return "\n".join(lines)


def _verdict_lines(r: CheckResult) -> list[str]:
    ran = sum(not c.raised for c in r.cases)
    if r.status == "ok":
        failed = [c for c in r.cases if not c.passed]
        if not failed:
            return [f"PASSED {ran}/{r.cases_total} cases · max_abs_err {_fmt_err(r.max_abs_err)}"]
        first = failed[0]
        return [
            f"FAILED {len(failed)}/{r.cases_total} cases · first failing case: "
            f"{first.index} {first.name} ({first.problem()}, "
            f"max_abs_err {_fmt_err(None if first.nan_count else first.max_abs_err)})"
        ]
    err = r.error or {}
    tail = err.get("tail", "")
    if r.status == "compile_error":
        return ["COMPILE ERROR", tail or err.get("message", "")]
    if r.status == "error":
        phase = err.get("phase", "")
        head = f"ERROR during {phase}" if phase else "ERROR"
        where = err.get("where")
        if where:
            head += f" at {r.display_name}:{where['line']} in {where['function']}()"
        return [head, tail or f"{err.get('type', '')}: {err.get('message', '')}"]
    if r.status == "memory_limit":
        out = [f"MEMORY LIMIT: stopped at the sandbox's {r.memory_mb} MiB address-space limit "
               f"after {ran}/{r.cases_total} cases"]
        if tail:
            out.append(tail)
        elif r.detail:
            out.append(r.detail)
        return out
    if r.status == "sandbox_violation":
        out = ["SANDBOX VIOLATION: the candidate did something the harness forbids"]
        out.extend(f"  {v['kind']} refused: {v['detail']}" for v in r.violations)
        return out
    if r.status == "timeout":
        return [f"TIMEOUT: {r.detail} ({ran}/{r.cases_total} cases finished before the kill)"]
    if r.status == "unavailable":
        return ["NOT RUN: " + r.detail]
    return [f"CRASHED: {r.detail} ({ran}/{r.cases_total} cases finished)",
            *([tail] if tail else [])]


def cache_key_file() -> Path:
    """Where the HMAC key of every result cache of this user lives (outside any workspace).

    ``$CTXMEM_STATE_DIR`` or ``$XDG_STATE_HOME/ctxmem`` or ``~/.local/state/ctxmem``; the
    sandbox never sees it (no host home is bound into it).
    """
    base = os.environ.get("CTXMEM_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "ctxmem")
    return Path(base) / "kernel-cache.key"


_PROCESS_KEY = secrets.token_bytes(32)


def _load_cache_key() -> bytes:
    """The user's cache key, created on first use (0600); a per-process key if it cannot be."""
    path = cache_key_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            key = f.read(64)
        if len(key) >= 32:
            return key
    except OSError:
        pass
    return _PROCESS_KEY


class ResultCache:
    """Check results and the ``eval#`` counter, in one small SQLite file.

    Every result row carries an HMAC-SHA256 of (key, eval id, payload) under a key the
    sandbox never sees (:func:`cache_key_file`); a row whose MAC does not verify — written
    by anything but this class, or before MACs existed — is ignored and overwritten by the
    next real result. ``submit`` does not read the cache at all.
    """

    def __init__(self, path: Path, *, key: bytes | None = None):
        self.path = path
        self._key = key if key is not None else _load_cache_key()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS results ("
                " key TEXT PRIMARY KEY,"  # hash of everything the outcome depends on
                " eval_id INTEGER NOT NULL,"  # the evaluation that produced it
                " payload TEXT NOT NULL)"  # CheckResult.to_dict() as JSON
            )
            columns = {row[1] for row in db.execute("PRAGMA table_info(results)")}
            if "mac" not in columns:
                # HMAC-SHA256 (hex) of the row under the user's cache key; NULL = untrusted.
                db.execute("ALTER TABLE results ADD COLUMN mac TEXT")
            db.execute(
                "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def _mac(self, key: str, eval_id: int, payload: str) -> str:
        message = _canonical([key, eval_id, payload]).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def next_id(self, name: str = "eval") -> int:
        db = self._connect()
        try:
            with db:
                db.execute(
                    "INSERT INTO counters (name, value) VALUES (?, 1) "
                    "ON CONFLICT(name) DO UPDATE SET value = value + 1",
                    (name,),
                )
                (value,) = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        finally:
            db.close()
        return int(value)

    def get(self, key: str) -> tuple[int, dict[str, Any]] | None:
        """The authenticated result stored under ``key``; ``None`` when absent or forged."""
        db = self._connect()
        try:
            row = db.execute("SELECT eval_id, payload, mac FROM results WHERE key = ?",
                             (key,)).fetchone()
        finally:
            db.close()
        if row is None or not isinstance(row[2], str) or not isinstance(row[1], str) \
                or not isinstance(row[0], int):
            return None
        if not hmac.compare_digest(row[2], self._mac(key, row[0], row[1])):
            return None
        return int(row[0]), json.loads(row[1])

    def put(self, key: str, eval_id: int, payload: dict[str, Any]) -> None:
        text = json.dumps(payload)
        db = self._connect()
        try:
            with db:
                # REPLACE: a row that failed authentication is overwritten by the real result.
                db.execute(
                    "INSERT OR REPLACE INTO results (key, eval_id, payload, mac) VALUES (?, ?, ?, ?)",
                    (key, eval_id, text, self._mac(key, eval_id, text)),
                )
        finally:
            db.close()


def _case_result(index: int, spec: CaseSpec, raw: dict[str, Any]) -> CaseResult:
    return CaseResult(
        index=index,
        name=spec.name,
        shape=spec.describe(),
        prefix_lens=spec.prefix_lens,
        extend_lens=spec.extend_lens,
        passed=bool(raw.get("passed", False)),
        numel=int(raw.get("numel", spec.output_numel)),
        mismatches=raw.get("mismatches"),
        max_abs_err=raw.get("max_abs_err"),
        nan_count=int(raw.get("nan_count", 0)),
        oob_writes=int(raw.get("oob_writes", 0)),
        inputs_modified=tuple(raw.get("inputs_modified", ())),
        first_mismatch=raw.get("first_mismatch"),
        seconds=raw.get("seconds"),
        raised="mismatches" not in raw,
    )


def _from_payload(payload: dict[str, Any], eval_id: int, cached_from: int | None) -> CheckResult:
    cases = tuple(
        CaseResult(**{**c, "prefix_lens": tuple(c["prefix_lens"]),
                      "extend_lens": tuple(c["extend_lens"]),
                      "inputs_modified": tuple(c["inputs_modified"])})
        for c in payload["cases"]
    )
    return CheckResult(
        eval_id=eval_id,
        status=payload["status"],
        display_name=payload["display_name"],
        source_sha=payload["source_sha"],
        config=payload["config"],
        seed=payload["seed"],
        split=payload["split"],
        cases_total=payload["cases_total"],
        cases=cases,
        error=payload["error"],
        violations=tuple(payload["violations"]),
        detail=payload["detail"],
        wall_s=payload["wall_s"],
        memory_mb=payload["memory_mb"],
        cached_from=cached_from,
        extra=payload.get("extra", {}),
    )


class CorrectnessChecker:
    """Checks kernels of one workspace; owns its result cache and ``eval#`` counter."""

    def __init__(self, workspace: Workspace, *, limits: SandboxLimits | None = None,
                 warm: bool = True, allow_unsandboxed: bool | None = None):
        self.workspace = workspace
        self.limits = limits or SandboxLimits()
        # Send checks to the process-wide warm sandbox (worker.py); warm=False starts and
        # stops a sandbox per check (same code path, slower).
        self.warm = warm
        # None: the CTXMEM_KERNEL_ALLOW_UNSANDBOXED environment variable decides.
        self.allow_unsandboxed = allow_unsandboxed
        self.cache = ResultCache(workspace.state_dir / "results.sqlite")
        self._reference = asset_path("reference.py")

    def cache_key(self, source: str, config: Mapping[str, ConfigValue], seed: int, split: str) -> str:
        return _sha(
            _canonical(
                {
                    "checker": CHECKER_VERSION,
                    "cases": CASES_VERSION,
                    "source": _sha(source),
                    "reference": _sha(self._reference.read_bytes()),
                    "config": dict(config),
                    "seed": seed,
                    "split": split,
                    "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()},
                    "memory_mb": self.limits.memory_mb,
                }
            )
        )

    def check(
        self,
        path: str = KERNEL_FILE,
        *,
        source: str | None = None,
        config: Mapping[str, ConfigValue] | None = None,
        seed: int = 0,
        split: Split = "dev",
        use_cache: bool = True,
        counter: str = "eval",
    ) -> CheckResult:
        """Check ``path`` in the workspace (or ``source``, shown under the name ``path``).

        ``counter`` names the id sequence the evaluation draws from (``eval`` for checks;
        the ``compile`` tool uses its own, so compiles do not consume ``eval#`` ids).
        """
        if source is None:
            source = self.workspace.resolve(path, must_exist=True).read_text()
        cfg: dict[str, ConfigValue] = dict(DEFAULT_CONFIG if config is None else config)
        key = self.cache_key(source, cfg, seed, split)
        eval_id = self.cache.next_id(counter)
        if use_cache:
            hit = self.cache.get(key)
            if hit is not None:
                first_id, payload = hit
                return _from_payload(payload, eval_id, cached_from=first_id)

        specs = suite(seed, split)
        source_sha = _sha(source)
        numeric_blocks = [int(v) for k, v in cfg.items()
                          if k.upper().startswith("BLOCK") and isinstance(v, int)]
        job = {
            # The sandbox runs this exact text (a copy in the check folder), so the result
            # belongs to it even if the agent edits the file meanwhile.
            "source": source,
            "display_name": path,
            "reference_path": str(self._reference),
            "config": cfg,
            "cases": [s.to_dict() for s in specs],
            "tolerances": {k: asdict(v) for k, v in TOLERANCES.items()},
            # Enough poisoned rows each side to catch a whole unmasked tile.
            "guard_rows": max([128, *numeric_blocks]),
        }
        outcome = run_job(job, workspace_root=self.workspace.root, limits=self.limits,
                          warm=self.warm, allow_unsandboxed=self.allow_unsandboxed)
        report = outcome.report
        error = report.get("error")
        if error is None and outcome.status in ("crashed", "memory_limit") and outcome.stderr_tail:
            error = {"type": "", "message": outcome.detail,
                     "tail": "\n".join(outcome.stderr_tail.rstrip().splitlines()[-8:])}
        raw_cases = report.get("cases", [])
        cases = tuple(_case_result(i, specs[i], raw) for i, raw in enumerate(raw_cases))
        result = CheckResult(
            eval_id=eval_id,
            status=outcome.status,
            display_name=path,
            source_sha=source_sha,
            config=cfg,
            seed=seed,
            split=split,
            cases_total=len(specs),
            cases=cases,
            error=error,
            violations=tuple(report.get("violations", ())),
            detail=outcome.detail,
            wall_s=outcome.wall_s,
            memory_mb=self.limits.memory_mb,
            extra={k: report[k] for k in ("VmPeak", "VmHWM", "import_seconds", "isolation")
                   if k in report},
        )
        if use_cache and result.status in _CACHEABLE:
            payload = result.to_dict()
            del payload["eval_id"], payload["cached_from"], payload["passed"], payload["eval"]
            self.cache.put(key, eval_id, payload)
        return result
