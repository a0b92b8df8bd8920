"""The trusted side of a measurement: screen, run sandboxed, check floors, cache.

:class:`Measurer` answers "what does this source do at this config on these benchmark
shapes?" with the counts of ``instrument.py``:

1. **screen** — :func:`~ctxmem.workloads.kernel.instrument.screen_source` in this process;
   a refused source is never run (:class:`MeasureRefused`, one line per reason);
2. **cache** — by (code sha256, config, shape, instrument version) in a folder of JSON
   files (``$CTXMEM_SIMX_CACHE`` or ``~/.cache/ctxmem/simx-measure``). Counts do not
   depend on the SIMX seed, so every seed and every run shares them; the code is the source
   without a ``CONFIG`` literal nothing reads (:func:`~.simx.code_of`);
3. **run** — the shapes not cached, for one or several configs, in one sandboxed run per
   ``RUNS_PER_CHILD`` configs:
   ``sandbox.run_in_sandbox("ctxmem.workloads.kernel.instrument:measure_runs", ...)``, the
   same bubblewrap + seccomp sandbox as correctness checks (no sandbox: nothing runs);
4. **floors** — the counts are checked against :func:`~.instrument.work_floors` computed
   here: out must be written, the causal FLOPs done, Q and the unique K/V rows read. A
   shape under a floor is refused (:class:`MeasureRefused`), never priced.

Only what passed all four is returned (and cached).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ctxmem.errors import InputError
from ctxmem.workloads.kernel import instrument
from ctxmem.workloads.kernel.simx import (
    BENCH_SHAPES,
    CONFIG_SPACE,
    DEVICE_NAME,
    BenchShape,
    code_of,
)
from ctxmem.workloads.kernel.workspace import Workspace, asset_path

MEASURE_VERSION = "m5"  # m5: stratified (Owen-scrambled), adaptive program sampling
RUNS_PER_CHILD = 6  # configs measured by one sandboxed child (its report must fit 4 MiB)
FLOOR_SLACK = 0.25  # sampling noise allowance: refuse below a quarter of the ideal work
SALT = "simx-measure-v1"


class MeasureRefused(InputError):
    """The candidate was refused before or after its instrumented run (message says why)."""


class MeasureFailed(InputError):
    """The instrumented run itself failed (the candidate raised, timed out, crashed)."""


def cache_dir() -> Path:
    root = os.environ.get("CTXMEM_SIMX_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "ctxmem" / "simx-measure"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _key(source: str, config: Mapping[str, Any], shape: str) -> str:
    blob = json.dumps([MEASURE_VERSION, code_of(source), sorted(config.items()), shape], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def check_floors(shape: BenchShape, measured: Mapping[str, Any]) -> list[str]:
    """Reasons a shape's counts fall under the least work of a correct kernel (empty: ok)."""
    floors = instrument.work_floors(shape.case_dict())
    got = {"store_bytes": 0.0, "dot_flops": 0.0, "load_bytes": 0.0}
    for launch in measured["launches"]:
        pp = launch["per_program"]
        k = max(1, len(pp))
        n = launch["programs"]
        got["store_bytes"] = max(got["store_bytes"], n * sum(p["st_bytes"] for p in pp) / k)
        got["dot_flops"] += n * sum(p["dot_flops"] for p in pp) / k
        got["load_bytes"] += n * sum(p["ld_bytes"] for p in pp) / k
    what = {"store_bytes": "bytes stored by one launch (out must be written)",
            "dot_flops": "tl.dot FLOPs (the causal attention's)",
            "load_bytes": "bytes loaded (Q and every visible K/V row)"}
    problems = [f"{shape.name}: {got[k]:.3g} {what[k]}, under the least a correct kernel does "
                f"({floors[k]:.3g})" for k in floors if got[k] < FLOOR_SLACK * floors[k]]
    # A launch's num_warps/num_stages are the wrapper's to choose, and the device model prices
    # them: a value the device does not take (num_stages=-1 once let a 128x128 tile skip the
    # shared-memory limit) is refused, as the launch config's own keys are.
    for launch in measured["launches"]:
        for key in ("num_warps", "num_stages"):
            value = launch.get(key)
            if value not in CONFIG_SPACE[key]:
                allowed = ", ".join(map(str, CONFIG_SPACE[key]))
                problems.append(f"{shape.name}: a launch with {key}={value!r}; {DEVICE_NAME} takes {key} in {{{allowed}}}")
    return problems


class Measurer:
    """Measurements of candidates over one workspace (see the module docstring)."""

    def __init__(self, workspace: Workspace, *, timeout_s: float = 900.0, memory_mb: int = 6144):
        self.workspace = workspace
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.runs = 0  # sandboxed children started (tests read it)

    def measure(self, source: str, config: Mapping[str, Any],
                shapes: Sequence[BenchShape] = BENCH_SHAPES) -> dict[str, Any]:
        return self.measure_many(source, [config], shapes)[0]

    def measure_many(self, source: str, configs: Sequence[Mapping[str, Any]],
                     shapes: Sequence[BenchShape] = BENCH_SHAPES) -> list[dict[str, Any]]:
        """One ``{shape name: counts}`` per config; raises MeasureRefused / MeasureFailed."""
        refusals = instrument.screen_source(source)
        if refusals:
            raise MeasureRefused("refused: " + "; ".join(r.text() for r in refusals))
        folder = cache_dir()
        results: list[dict[str, Any]] = [{} for _ in configs]
        missing: list[tuple[int, list[BenchShape]]] = []
        for i, cfg in enumerate(configs):
            need = []
            for shape in shapes:
                path = folder / f"{_key(source, cfg, shape.name)}.json"
                if path.exists():
                    try:
                        results[i][shape.name] = json.loads(path.read_text())
                        continue
                    except ValueError:
                        pass
                need.append(shape)
            if need:
                missing.append((i, need))
        # At most RUNS_PER_CHILD configs per sandboxed child: a child reports every sampled
        # program of every launch, and 18 configs of a two-launch kernel (20-60 KB a shape)
        # passed the 4 MiB the parent reads of a report (the autotune failed, no result).
        for at in range(0, len(missing), RUNS_PER_CHILD):
            chunk = missing[at:at + RUNS_PER_CHILD]
            runs = [{"config": dict(configs[i]), "cases": [s.case_dict() for s in need]}
                    for i, need in chunk]
            answers = self._run(source, runs)
            for (i, need), answer in zip(chunk, answers, strict=True):
                status = answer.get("status")
                if status == "refused":
                    raise MeasureRefused("refused: " + str(answer.get("message", "")))
                if status != "ok":
                    tail = answer.get("tail")
                    raise MeasureFailed(f"the instrumented run failed: {answer.get('message', status)}"
                                        + (f"\n{tail}" if tail else ""))
                for shape in need:
                    counts = answer["shapes"][shape.name]
                    problems = check_floors(shape, counts)
                    if problems:
                        raise MeasureRefused("refused: the measured work is below what the "
                                             "computation requires: " + "; ".join(problems))
                    path = folder / f"{_key(source, configs[i], shape.name)}.json"
                    # a name of its own: two processes measuring the same candidate (two
                    # agents on one machine, test workers) must not replace each other's file
                    tmp = path.with_name(f"{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
                    tmp.write_text(json.dumps(counts))
                    tmp.replace(path)
                    results[i][shape.name] = counts
        return results

    def _run(self, source: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from ctxmem.workloads.kernel import sandbox

        self.runs += 1
        job = {"reference_path": str(asset_path("reference.py")), "runs": runs, "salt": SALT}
        limits = sandbox.SandboxLimits(timeout_s=min(self.timeout_s, 120.0 + 90.0 * len(runs)),
                                       memory_mb=self.memory_mb)
        try:
            outcome = sandbox.run_in_sandbox(
                "ctxmem.workloads.kernel.instrument:measure_runs", job,
                workspace=self.workspace.root, limits=limits, source=source)
        except sandbox.SandboxUnavailableError as exc:
            raise MeasureFailed(f"no sandbox to measure in: {exc}") from exc
        if outcome.status not in ("ok", "error"):
            detail = outcome.detail or outcome.status
            tail = " | ".join(outcome.stderr_tail.strip().splitlines()[-3:])
            raise MeasureFailed(f"the instrumented run ended: {detail}" + (f" ({tail})" if tail else ""))
        report = outcome.report
        if "result" not in report:
            err = report.get("error") or {}
            msg = err.get("message") if isinstance(err, dict) else str(err)
            raise MeasureFailed(f"the instrumented run raised: {msg or outcome.status}")
        return _answers(report["result"], len(runs))


def _answers(answer: Any, n: int) -> list[dict[str, Any]]:
    if isinstance(answer, dict) and isinstance(answer.get("runs"), list) and len(answer["runs"]) == n:
        return [a if isinstance(a, dict) else {"status": "error"} for a in answer["runs"]]
    if isinstance(answer, dict) and answer.get("status") in ("refused", "error"):
        return [answer] * n
    raise MeasureFailed("the instrumented run returned a malformed result")


__all__ = ["MeasureFailed", "MeasureRefused", "Measurer", "cache_dir", "check_floors"]
