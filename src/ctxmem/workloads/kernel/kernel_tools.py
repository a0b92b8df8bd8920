"""All tools of the kernel workload behind one dispatcher: ``KernelTools.call(name, input)``.

Files (``list_files``, ``read_file``, ``edit_file``, ``write_file``, from ``tools.py``) plus:

=================  ===========================================================================
``compile``        import and launch the candidate on one tiny case in the sandboxed
                   interpreter; Triton-style ``CompilationError`` / traceback on failure;
                   then SIMX-1's resource check on the tiles the code really builds
                   (measured on the two widest shapes): ``OutOfResources`` over the
                   shared-memory limit, register-spill warnings, registers and shared
                   memory per launched kernel
``check``          correctness on the dev suite (``eval#N``), ``CorrectnessChecker.check``
``benchmark``      ``bench#N``: time per benchmark shape, reference time, speedup, geomean
                   (SIMX-1: the candidate's measured work priced on the hidden device)
``autotune``       ``tune#N``: price every config of a space (one measurement per distinct
                   tiling; num_warps/num_stages re-priced); ``OutOfResources`` lines for
                   the ones that do not fit; the best config
``profile``        ``prof#N``: profiler metrics of one shape (occupancy and its limiter,
                   registers, spills, shared memory, DRAM bandwidth, gather stalls, tail),
                   then Nsight-Compute-style sections derived from the cost model
                   (``profile_report.py``): speed of light, memory and shared-memory
                   workload, compute pipes, instructions, launch, occupancy, scheduler,
                   warp stalls, source-line hotspots — all labelled simulated
``git_commit``     ``git add -A`` + commit (deterministic shas, see ``gitrepo.py``)
``git_log``        one line per commit
``git_diff``       the working tree against HEAD or a revision
``git_checkout``   restore files (default: all) from a revision; HEAD does not move
``submit``         held-out correctness (``eval#N``) + final benchmark (``bench#N``);
                   the final speedup is 0 when the held-out suite fails
=================  ===========================================================================

Decisions:

* **Config.** Every kernel tool takes an optional ``config`` object. The config used is
  ``DEFAULT_CONFIG``, replaced by the kernel's module-level ``CONFIG`` dict when it has one,
  updated with the call's ``config``. The same dict goes to the kernel (``launch(...,
  **config)``) and to the measured run, so what is checked is what is timed.
* **Measured, never declared.** SIMX-1 prices what the code does in the instrumented
  interpreter (``measure.py``, ``instrument.py``, ``simx.py``); nothing the source says
  about itself (an ``ARCH`` line, a comment) is read. The reference is the original kernel
  at its best config on the device, so re-tuning the original scores about 1×.
* **Benchmark does not refuse** an unchecked or failing kernel — a real benchmark would
  not know — but it prints the correctness status of this exact source and config from
  the checker's cache (``eval#N PASSED`` / ``FAILED`` / ``not checked``). Only ``submit``
  enforces correctness. It does refuse a kernel SIMX-1 cannot "compile": unparsable
  source, an invalid launch parameter, ``OutOfResources``, a source the screen refuses
  (torch attention, reflection, imports), a run that writes its inputs, or measured work
  under the least a correct kernel does.
* **Errors.** ``is_error`` is true when the tool could not do its job as asked: bad
  arguments, a missing file, an unknown revision, a kernel that does not compile or does
  not fit (compile/benchmark/profile/autotune with no valid config). A kernel that
  compiles but fails correctness is a normal result (the check did its job).
* **Determinism.** In SIMX mode outputs depend only on the seed, the workspace files and
  the calls made: no wall times, no absolute paths, ids from per-workspace counters.
* **GPU mode** (``device="gpu"``, or ``"auto"`` with CUDA present): ``benchmark``,
  ``submit`` and ``autotune`` time the candidate with ``triton.testing.do_bench`` in a
  child process (``_gpu_bench.py``), check every output against an fp32 reference on the
  GPU, and print the same tables with ``gpu`` in place of ``simulated``; the reference is
  the original kernel at its best of 24 configs on that GPU. ``compile``'s launch is the
  interpreter's; its resource lines and ``profile`` stay on SIMX-1 (labelled simulated).
  The GPU child is not inside the OS sandbox (CUDA needs the device), so three things
  stand in for it: the source passes the same static screen as a SIMX measurement
  (:func:`~ctxmem.workloads.kernel.instrument.screen_source`: no imports but torch and
  triton, no ``open``, no private or frame attributes) in this process before anything
  runs; the child gets an allow-listed environment (no API key, no token, nothing of the
  caller's environment but the CUDA, Triton and locale settings); and an LLM's kernels
  run on the GPU only when the caller says so (``run_llm(..., allow_unsandboxed_gpu=True)``,
  ``ctxmem workload kernel run --policy llm --device gpu --allow-unsandboxed-gpu``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from ctxmem.errors import InputError
from ctxmem.messages import ToolSpec
from ctxmem.workloads.kernel.correctness import (
    DEFAULT_CONFIG,
    CheckResult,
    ConfigValue,
    CorrectnessChecker,
    config_text,
)
from ctxmem.workloads.kernel.gitrepo import GitRepo
from ctxmem.workloads.kernel.instrument import screen_source
from ctxmem.workloads.kernel.measure import MeasureFailed, Measurer, MeasureRefused
from ctxmem.workloads.kernel.profile_report import profile_sections
from ctxmem.workloads.kernel.sandbox import SandboxLimits
from ctxmem.workloads.kernel.simx import (
    BENCH_SHAPES,
    DEVICE_NAME,
    REFERENCE_TILES,
    BenchShape,
    InvalidConfig,
    KernelSourceError,
    Simx,
    code_of,
    normalize_config,
    parse_config,
)
from ctxmem.workloads.kernel.tools import (
    FILE_TOOL_SCHEMAS,
    FileTools,
    ToolArgumentError,
    validate_arguments,
)
from ctxmem.workloads.kernel.variants import rung_source
from ctxmem.workloads.kernel.workspace import KERNEL_FILE, Workspace, WorkspaceError, asset_path

DeviceMode = Literal["simx", "gpu", "auto"]
MAX_AUTOTUNE_CONFIGS = 256
DEFAULT_PROFILE_SHAPE = "mixed_extend"

#: a kernel file name the evaluation tools take: letters, digits, ``_ . -`` and ``/``. Their
#: output names the file in headers the run's scores are read from, so a name such as
#: ``FAILED.py`` or ``k.py (sha 0badc0de) · BLOCK_M=32`` could forge what they parse
KERNEL_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
_PATH = {"type": "string", "pattern": KERNEL_PATH.pattern,
         "description": f"Kernel file relative to the workspace (default {KERNEL_FILE}); letters, digits, _ . - /."}
_CONFIG = {
    "type": "object",
    "description": "Launch config overrides, e.g. {\"BLOCK_M\": 64, \"num_stages\": 2}. Defaults: "
    "the kernel's module-level CONFIG dict if any, else BLOCK_M=32 BLOCK_N=32 num_warps=4 "
    "num_stages=1. Passed to launch() as keyword arguments.",
}


def _schema(name: str, description: str, properties: dict[str, Any],
            required: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        spec["required"] = list(required)
    return {"name": name, "description": description, "input_schema": spec}


KERNEL_TOOL_SCHEMAS: tuple[dict[str, Any], ...] = (
    _schema("compile", "Compile the kernel: import it and launch it once on a tiny case in the "
            "Triton interpreter, then check it against the target device's resource limits. "
            "Reports compile errors, out-of-resource errors and register spills.",
            {"path": _PATH, "config": _CONFIG}),
    _schema("check", "Check correctness on the development suite in the Triton interpreter "
            "against the reference (result id eval#N).", {"path": _PATH, "config": _CONFIG}),
    _schema("benchmark", "Time the kernel on the benchmark shapes against the reference kernel "
            "(result id bench#N): per-shape times, speedups and the geomean speedup.",
            {"path": _PATH, "config": _CONFIG}),
    _schema("autotune", "Time every config of a search space (the cartesian product of the "
            "given value lists, applied over the base config) and report the best (tune#N).",
            {"path": _PATH, "config": _CONFIG,
             "space": {"type": "object", "description": "Lists of values per launch parameter, "
                       "e.g. {\"BLOCK_M\": [32, 64], \"num_stages\": [1, 2]}."},
             "max_configs": {"type": "integer", "minimum": 1,
                             "description": f"Refuse spaces larger than this (default 64, at most "
                             f"{MAX_AUTOTUNE_CONFIGS})."}},
            ("space",)),
    _schema("profile", "Profile the kernel on one benchmark shape (result id prof#N): occupancy, "
            "registers, spills, shared memory, DRAM bandwidth, gather stalls, tail effect.",
            {"path": _PATH, "config": _CONFIG,
             "shape": {"type": "string", "description": "Benchmark shape name (default "
                       f"{DEFAULT_PROFILE_SHAPE}): " + ", ".join(s.name for s in BENCH_SHAPES)}}),
    _schema("git_commit", "Commit every change in the workspace (git add -A; git commit).",
            {"message": {"type": "string", "description": "Commit message."}}, ("message",)),
    _schema("git_log", "Show the commit history, newest first (one line per commit).",
            {"max_count": {"type": "integer", "minimum": 1, "description": "At most this many (default 20)."}}),
    _schema("git_diff", "Show changes of the working tree against HEAD (or against `rev`).",
            {"rev": {"type": "string", "description": "Revision to compare with (default HEAD)."},
             "path": {"type": "string", "description": "Limit the diff to this file."}}),
    _schema("git_checkout", "Restore files from a revision into the working tree (HEAD does not "
            "move); commit afterwards to record the revert.",
            {"rev": {"type": "string", "description": "Commit sha (or prefix), HEAD~N, …"},
             "path": {"type": "string", "description": "Only this file (default: every file)."}},
            ("rev",)),
    _schema("submit", "Submit the kernel: correctness on held-out seeds and shapes, then the final "
            "benchmark. The final speedup is 0 if any held-out case fails.",
            {"path": _PATH, "config": _CONFIG}),
)

ALL_TOOL_SCHEMAS: tuple[dict[str, Any], ...] = FILE_TOOL_SCHEMAS + KERNEL_TOOL_SCHEMAS


def kernel_tool_specs() -> list[ToolSpec]:
    """Every tool of the workload (files, kernel, git, submit) as ``ToolSpec``."""
    return [ToolSpec(s["name"], s["description"], s["input_schema"]) for s in ALL_TOOL_SCHEMAS]


class ToolFailure(InputError):
    """The tool could not do its job; the message is the tool's whole output."""


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _sha8(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else 0.0


#: the caller's environment variables a GPU child keeps: the CUDA driver's and Triton's
#: settings, the locale and the library path (never an API key, a token or a proxy)
_GPU_ENV_KEEP = ("PATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "CUDA_HOME", "CUDA_PATH")
_GPU_ENV_PREFIXES = ("CUDA_", "NVIDIA_", "TRITON_")


def gpu_env(scratch: Path) -> dict[str, str]:
    """The whole environment of a GPU child: an allow-list of the caller's (see
    ``_GPU_ENV_KEEP``), ``HOME`` and ``TMPDIR`` in the run's scratch folder, Triton's cache
    where it already was (compiled kernels are reused across runs), never the interpreter."""
    env = {k: v for k, v in os.environ.items()
           if (k in _GPU_ENV_KEEP or k.startswith(_GPU_ENV_PREFIXES))
           and not any(w in k for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))}
    env.pop("TRITON_INTERPRET", None)  # a GPU run compiles for the device
    env.setdefault("TRITON_CACHE_DIR", str(Path.home() / ".triton" / "cache"))
    env["HOME"] = str(scratch)
    env["TMPDIR"] = str(scratch)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


class KernelTools:
    """The kernel workload's tools over one workspace, for one seed."""

    schemas = ALL_TOOL_SCHEMAS

    def __init__(self, workspace: Workspace, *, seed: int = 0, device: DeviceMode = "simx",
                 limits: SandboxLimits | None = None, warm: bool = True):
        self.workspace = workspace
        self.seed = seed
        if device == "auto":
            device = "gpu" if _cuda_available() else "simx"
        self.device: Literal["simx", "gpu"] = "gpu" if device == "gpu" else "simx"
        self.files = FileTools(workspace)
        self.checker = CorrectnessChecker(workspace, limits=limits, warm=warm)
        self.simx = Simx(seed)
        self.measurer = Measurer(workspace)
        self._reference: tuple[dict[str, int], dict[str, float]] | None = None
        self._gpu_reference: tuple[dict[str, Any], dict[str, float]] | None = None
        self.git = GitRepo(workspace)
        self.last_submission: dict[str, Any] | None = None
        self._handlers: dict[str, Callable[..., str]] = {
            "compile": self.compile,
            "check": self.check,
            "benchmark": self.benchmark,
            "autotune": self.autotune,
            "profile": self.profile,
            "git_commit": self.git_commit,
            "git_log": self.git_log,
            "git_diff": self.git_diff,
            "git_checkout": self.git_checkout,
            "submit": self.submit,
        }

    @staticmethod
    def specs() -> list[ToolSpec]:
        return kernel_tool_specs()

    def call(self, name: str, arguments: Mapping[str, Any]) -> tuple[str, bool]:
        """Run tool ``name``: ``(text, is_error)``. Never raises for the agent's mistakes."""
        if name in self.files._handlers:
            out = self.files.call(name, arguments)
            return out.text, out.is_error
        schema = next((s for s in KERNEL_TOOL_SCHEMAS if s["name"] == name), None)
        if schema is None:
            known = ", ".join(s["name"] for s in self.schemas)
            return f"error: unknown tool {name!r}; known tools: {known}", True
        try:
            validate_arguments(schema, arguments)
            path = arguments.get("path")
            if isinstance(path, str) and not KERNEL_PATH.fullmatch(path):
                raise ToolArgumentError(f"path {path[:80]!r}: a kernel file name holds only letters, digits, "
                                        "'_', '.', '-' and '/' (rename the file with the file tools)")
            return self._handlers[name](**arguments), False
        except ToolFailure as exc:
            return str(exc), True
        except (ToolArgumentError, WorkspaceError) as exc:
            return f"error: {exc}", True

    # -- shared steps -------------------------------------------------------------------

    def _load(self, path: str, config: Mapping[str, Any] | None
              ) -> tuple[str, dict[str, Any] | None, dict[str, ConfigValue], str | None]:
        """Source, its CONFIG literal (None if none), the merged config, a parse error."""
        source = self.workspace.read_text(path)
        literal: dict[str, Any] | None = None
        problem: str | None = None
        try:
            literal = parse_config(source)
        except SyntaxError as exc:
            problem = _syntax_error(exc, path)
        except KernelSourceError as exc:
            problem = f"{path}: {exc}"
        base: dict[str, ConfigValue] = dict(DEFAULT_CONFIG)
        if literal is not None:
            base = dict(literal)
        if config:
            for key, value in config.items():
                if not isinstance(value, int | float | str | bool):
                    raise ToolArgumentError(f"config value {key}={value!r} must be a number, string or boolean")
            base.update(config)
        return source, literal, base, problem

    def _header(self, prefix: str, path: str, source: str, cfg: Mapping[str, ConfigValue]) -> str:
        # The sha of the code (a CONFIG literal nothing reads is not code): the same code at
        # the same config is the same measurement, whatever its CONFIG line says.
        return f"{prefix} · {path} (sha {_sha8(code_of(source))}) · {config_text(cfg)}"

    def _simx_config(self, cfg: Mapping[str, ConfigValue]) -> tuple[dict[str, Any], list[str]]:
        try:
            return normalize_config(cfg)
        except InvalidConfig as exc:
            raise ToolFailure(f"error: invalid launch config for {DEVICE_NAME}: {exc}") from exc

    def _measure(self, header: str, path: str, source: str, cfg: Mapping[str, ConfigValue],
                 shapes: tuple[BenchShape, ...] = BENCH_SHAPES) -> dict[str, Any]:
        """The candidate's measured work on ``shapes`` (sandboxed), or the tool's failure."""
        try:
            measured = self.measurer.measure(source, dict(cfg), shapes)
        except MeasureRefused as exc:
            raise ToolFailure("\n".join([header, f"{DEVICE_NAME}: {exc}"])) from exc
        except MeasureFailed as exc:
            raise ToolFailure("\n".join([header, f"{DEVICE_NAME} measurement: {exc}"])) from exc
        oor = self.simx.out_of_resources(measured)
        if oor is not None:
            raise ToolFailure("\n".join([header, _device_line("simulated"),
                                         *_oor_traceback(path, source, oor.line())]))
        return measured

    def reference(self) -> tuple[dict[str, int], dict[str, float]]:
        """The original kernel at its best config on this device: (config, µs per shape)."""
        if self._reference is None:
            base = rung_source("baseline")
            tiles = [{"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": 4, "num_stages": 1}
                     for bm, bn in REFERENCE_TILES]
            measured = self.measurer.measure_many(base, tiles)
            best: tuple[float, dict[str, int], dict[str, float]] | None = None
            for tile, m in zip(tiles, measured, strict=True):
                for warps in (2, 4, 8):
                    for stages in (1, 2, 3, 4):
                        trial = with_launch_params(m, 4, 1, warps, stages)
                        if self.simx.out_of_resources(trial) is not None:
                            continue
                        times = {s.name: t for s, t in self.simx.times(trial)}
                        score = sum(math.log(t) for t in times.values())
                        if best is None or score < best[0]:
                            best = (score, {**tile, "num_warps": warps, "num_stages": stages}, times)
            assert best is not None
            self._reference = (best[1], best[2])
        return self._reference

    def _correctness_line(self, source: str, cfg: Mapping[str, ConfigValue]) -> str:
        hit = self.checker.cache.get(self.checker.cache_key(source, cfg, self.seed, "dev"))
        if hit is None:
            return "correctness: not checked for this source and config (run check)"
        eval_id, payload = hit
        cases = payload.get("cases", [])
        passed = (payload.get("status") == "ok" and len(cases) == payload.get("cases_total")
                  and all(c.get("passed") for c in cases))
        if passed:
            return f"correctness: eval#{eval_id} PASSED (this source and config, dev suite)"
        return f"correctness: eval#{eval_id} FAILED — these are timings of an incorrect kernel"

    # -- compile --------------------------------------------------------------------------

    def compile(self, path: str = KERNEL_FILE, config: Mapping[str, Any] | None = None) -> str:
        source, _, cfg, problem = self._load(path, config)
        header = f"compile · {path} (sha {_sha8(source)}) · {config_text(cfg)}"
        if problem is not None:
            raise ToolFailure(f"{header}\n{problem}")
        scfg, notes = self._simx_config(cfg)
        result = self.checker.check(path, source=source, config=cfg, seed=self.seed,
                                    split="compile", counter="compile")
        if result.status != "ok" or any(c.raised for c in result.cases):
            raise ToolFailure("\n".join([header, *_compile_failure(result, source)]))
        if self.device == "gpu":
            # A real device reports resources when it compiles for real: at benchmark/autotune.
            return "\n".join([header, "tiny launch in the Triton interpreter: ok (values not checked; "
                              "run check)", *notes, "GPU mode: shared memory and registers are checked "
                              "by the GPU's own compiler at benchmark and autotune"])
        # Resources come from the tiles the code really builds: measured on the widest shapes.
        wide = tuple(s for s in BENCH_SHAPES if s.name in ("prefill_2k", "gqa_d64"))
        measured = self._measure(header, path, source, scfg, wide)
        lines = [header, "tiny launch in the Triton interpreter: ok (values not checked; run check)"]
        lines += notes
        target = []
        for shape in wide:
            cost = self.simx.cost(shape, measured[shape.name])
            for launch in cost.launches:
                res = launch.resources
                target.append(f"{launch.kernel} (head_dim {shape.head_dim}): "
                              f"{min(res.regs, self.simx.device.reg_cap)} registers, "
                              f"{res.spill_bytes} bytes spill stores, {res.smem} bytes shared memory")
                if res.spilled_regs or launch.spill_cliff:
                    lines.append(
                        f"warning: simx-as: {launch.kernel} (head_dim={shape.head_dim}): "
                        f"{res.spill_bytes} bytes spill stores, {res.spill_bytes} bytes spill loads"
                        + (f" ({res.regs} registers needed, {self.simx.device.reg_cap} available)"
                           if res.spilled_regs else " (a tl.dot B tile does not stay in registers)")
                    )
        lines.append(f"{DEVICE_NAME} target (simulated): " + "; ".join(target))
        return "\n".join(lines)

    # -- check ------------------------------------------------------------------------------

    def check(self, path: str = KERNEL_FILE, config: Mapping[str, Any] | None = None) -> str:
        source, _, cfg, _ = self._load(path, config)
        return self.checker.check(path, source=source, config=cfg, seed=self.seed, split="dev").render()

    # -- benchmark --------------------------------------------------------------------------

    def benchmark(self, path: str = KERNEL_FILE, config: Mapping[str, Any] | None = None) -> str:
        text, _ = self._benchmark(path, config)
        return text

    def _benchmark(self, path: str, config: Mapping[str, Any] | None) -> tuple[str, float]:
        source, _, cfg, problem = self._load(path, config)
        bench_id = self.checker.cache.next_id("bench")
        if problem is not None:
            raise ToolFailure(f"bench#{bench_id} · {path} (sha {_sha8(source)})\n{problem}")
        header = self._header(f"bench#{bench_id}", path, source, cfg)
        scfg, notes = self._simx_config(cfg)
        gpu_problems: list[str] = []
        if self.device == "gpu":
            rows, device_name, gpu_problems = self._gpu_times(path, source, cfg)
            label = "gpu"
            assert self._gpu_reference is not None
            ref_text = f"the original kernel at its best config on this GPU, {config_text(self._gpu_reference[0])}"
        else:
            measured = self._measure(header, path, source, scfg)
            ref_cfg, ref_times = self.reference()
            rows = [(s, ref_times[s.name], t) for s, t in self.simx.times(measured)]
            device_name, label = DEVICE_NAME, "simulated"
            ref_text = f"the original kernel at its best config on this device, {config_text(ref_cfg)}"
        lines = [header, _device_line(label, device_name), self._correctness_line(source, cfg), *notes]
        if self.device == "gpu":
            lines.append("outputs on the GPU vs an fp32 reference: " + (
                "all shapes within fp16 tolerance" if not gpu_problems else "WRONG on " + "; ".join(gpu_problems)))
        lines.append("")
        lines.append(f"{'shape':<16} {'batch':>5} {'heads':>6} {'dim':>4} {'prefix':>7} "
                     f"{'extend':>7} {'reference_us':>13} {'kernel_us':>10} {'speedup':>8}")
        speedups = []
        for shape, ref, t in rows:
            speedups.append(ref / t)
            lines.append(
                f"{shape.name:<16} {len(shape.prefix_lens):>5} "
                f"{f'{shape.num_q_heads}/{shape.num_kv_heads}':>6} {shape.head_dim:>4} "
                f"{sum(shape.prefix_lens):>7} {sum(shape.extend_lens):>7} {ref:>13.1f} "
                f"{t:>10.1f} {ref / t:>7.2f}x"
            )
        geo = _geomean(speedups)
        lines.append("")
        lines.append(f"geomean speedup {geo:.2f}x over the reference ({ref_text}) · {label}")
        return "\n".join(lines), geo

    def _gpu_run(self, path: str, source: str, configs: list[dict[str, Any]]) -> dict[str, Any]:
        """Time (and check on the GPU) the candidate at ``configs``, and the reference once."""
        ref_configs = [] if self._gpu_reference is not None else [
            {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": st}
            for bm in (32, 64, 128) for bn in (32, 64) for w in (4, 8) for st in (1, 2)]
        refusals = screen_source(source)
        if refusals:
            raise ToolFailure(f"error: {path} was refused before the GPU run (it runs outside the OS sandbox):\n"
                              + "\n".join(r.text(path) for r in refusals))
        with tempfile.TemporaryDirectory(prefix="ctxmem-gpu-") as scratch:
            d = Path(scratch)
            src = d / "candidate.py"
            src.write_text(source)
            job = {"source_path": str(src), "reference_path": str(asset_path("reference.py")),
                   "baseline_path": str(asset_path("extend_attention.py")),
                   "shapes": [s.case_dict(self.seed) for s in BENCH_SHAPES],
                   "configs": configs, "reference_configs": ref_configs}
            (d / "job.json").write_text(json.dumps(job))
            runner = Path(__file__).with_name("_gpu_bench.py")
            try:
                subprocess.run([sys.executable, "-I", str(runner), str(d / "job.json"), str(d / "result.json")],
                               cwd=self.workspace.root, timeout=600, capture_output=True, check=False,
                               env=gpu_env(d))
                report = json.loads((d / "result.json").read_text())
            except (subprocess.TimeoutExpired, OSError, ValueError) as exc:
                raise ToolFailure(f"error: GPU run of {path} did not finish: {type(exc).__name__}") from exc
        if report.get("status") != "ok":
            raise ToolFailure(f"error: GPU run of {path} failed\n{report.get('tail', report.get('error', ''))}")
        if self._gpu_reference is None:
            best: tuple[float, dict[str, Any], dict[str, float]] | None = None
            for i, cfg in enumerate(ref_configs):
                rows = [r["reference"][i] for r in report["shapes"]]
                if any("ms" not in x or not x["correct"] for x in rows):
                    continue
                score = sum(math.log(x["ms"]) for x in rows)
                if best is None or score < best[0]:
                    best = (score, cfg, {r["name"]: 1000.0 * x["ms"] for r, x in zip(report["shapes"], rows, strict=True)})
            if best is None:
                raise ToolFailure("error: the original kernel ran at no reference config on this GPU")
            self._gpu_reference = (best[1], best[2])
        return report

    def _gpu_times(self, path: str, source: str, cfg: Mapping[str, ConfigValue]
                   ) -> tuple[list[tuple[BenchShape, float, float]], str, list[str]]:
        report = self._gpu_run(path, source, [dict(cfg)])
        assert self._gpu_reference is not None
        _, ref = self._gpu_reference
        by_name = {s.name: s for s in BENCH_SHAPES}
        rows, problems = [], []
        for r in report["shapes"]:
            got = r["configs"][0]
            if "ms" not in got:
                raise ToolFailure(f"error: {path} failed to launch on {r['name']}: {got['error']}")
            if not got["correct"]:
                problems.append(f"{r['name']}: max abs error {got['max_err']:.3g}, {got['nan_rows']} NaN rows")
            rows.append((by_name[r["name"]], ref[r["name"]], 1000.0 * got["ms"]))
        return rows, str(report.get("device_name", "CUDA GPU")), problems

    # -- autotune ---------------------------------------------------------------------------

    def autotune(self, space: Mapping[str, Any], path: str = KERNEL_FILE,
                 config: Mapping[str, Any] | None = None, max_configs: int = 64) -> str:
        source, _, cfg, problem = self._load(path, config)
        tune_id = self.checker.cache.next_id("tune")
        if problem is not None:
            raise ToolFailure(f"tune#{tune_id} · {path} (sha {_sha8(source)})\n{problem}")
        for key, values in space.items():
            if not isinstance(values, list) or not values:
                raise ToolArgumentError(f"autotune: space[{key!r}] must be a non-empty list")
        keys = list(space)
        size = math.prod(len(space[k]) for k in keys)
        limit = min(max_configs, MAX_AUTOTUNE_CONFIGS)
        if size > limit:
            raise ToolArgumentError(f"autotune: the space has {size} configs, over max_configs={limit}; "
                                    "narrow it")
        header = (f"tune#{tune_id} · {path} (sha {_sha8(code_of(source))}) · "
                  f"{size} configs over base {config_text(cfg)}")
        if self.device == "gpu":
            return self._gpu_autotune(header, path, source, cfg, space)
        lines = [header, _device_line("simulated"), ""]
        trials: list[tuple[int, str, dict[str, Any] | None, str | None]] = []
        for i, values in enumerate(itertools.product(*(space[k] for k in keys)), start=1):
            trial: dict[str, ConfigValue] = {**cfg, **dict(zip(keys, values, strict=True))}
            shown = " ".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
            try:
                scfg, _ = normalize_config(trial)
            except InvalidConfig as exc:
                trials.append((i, shown, None, f"invalid: {exc}"))
                continue
            trials.append((i, shown, scfg, None))
        # One instrumented run per distinct tiling: num_warps / num_stages change no count,
        # so the launches that used the config's values are re-priced with the trial's.
        groups: dict[str, dict[str, Any]] = {}
        for _, _, maybe, _ in trials:
            if maybe is not None:
                groups.setdefault(_tiling_key(maybe), maybe)
        try:
            got = self.measurer.measure_many(source, list(groups.values()))
        except (MeasureRefused, MeasureFailed) as exc:
            raise ToolFailure("\n".join([header, f"{DEVICE_NAME}: {exc}"])) from exc
        measured = dict(zip(groups, got, strict=True))
        _, ref_times = self.reference()
        best: tuple[float, dict[str, Any]] | None = None
        for i, shown, maybe, bad in trials:
            if maybe is None:
                lines.append(f"{i:>4}  {shown:<52} {bad}")
                continue
            scfg = maybe
            rep_cfg = groups[_tiling_key(scfg)]
            m = with_launch_params(measured[_tiling_key(scfg)], rep_cfg["num_warps"], rep_cfg["num_stages"],
                                   scfg["num_warps"], scfg["num_stages"])
            oor = self.simx.out_of_resources(m)
            if oor is not None:
                lines.append(f"{i:>4}  {shown:<52} {oor.line().split(': ', 1)[1].split('. ')[0]}")
                continue
            times = self.simx.times(m)
            geo = _geomean([ref_times[s.name] / t for s, t in times])
            total = sum(t for _, t in times)
            lines.append(f"{i:>4}  {shown:<52} {total:>9.1f} us total  {geo:>6.2f}x geomean")
            if best is None or geo > best[0]:
                best = (geo, {**cfg, **{k: scfg[k] for k in keys}})
        lines.append("")
        if best is None:
            raise ToolFailure("\n".join([*lines, "no valid config in the space"]))
        lines.append(f"best config: {config_text(best[1])} · {best[0]:.2f}x geomean speedup "
                     "(correctness not checked: run check with this config)")
        return "\n".join(lines)

    def _gpu_autotune(self, header: str, path: str, source: str, cfg: Mapping[str, ConfigValue],
                      space: Mapping[str, Any]) -> str:
        keys = list(space)
        trials = [{**cfg, **dict(zip(keys, values, strict=True))}
                  for values in itertools.product(*(space[k] for k in keys))]
        report = self._gpu_run(path, source, trials)
        assert self._gpu_reference is not None
        _, ref = self._gpu_reference
        lines = [header, _device_line("gpu", str(report.get("device_name", "CUDA GPU"))), ""]
        best: tuple[float, dict[str, Any]] | None = None
        for i, trial in enumerate(trials):
            shown = " ".join(f"{k}={trial[k]}" for k in keys)
            rows = [(r["name"], r["configs"][i]) for r in report["shapes"]]
            failed = next((x["error"] for _, x in rows if "ms" not in x), None)
            if failed is not None:
                lines.append(f"{i + 1:>4}  {shown:<52} {failed.splitlines()[0][:80]}")
                continue
            wrong = [n for n, x in rows if not x["correct"]]
            geo = _geomean([ref[n] / (1000.0 * x["ms"]) for n, x in rows])
            total = sum(1000.0 * x["ms"] for _, x in rows)
            lines.append(f"{i + 1:>4}  {shown:<52} {total:>9.1f} us total  {geo:>6.2f}x geomean"
                         + (f"  WRONG on {', '.join(wrong)}" if wrong else ""))
            if not wrong and (best is None or geo > best[0]):
                best = (geo, trial)
        lines.append("")
        if best is None:
            raise ToolFailure("\n".join([*lines, "no config in the space ran correctly"]))
        lines.append(f"best config: {config_text(best[1])} · {best[0]:.2f}x geomean speedup "
                     "(outputs checked on the GPU; run check for the interpreter's edge cases)")
        return "\n".join(lines)

    # -- profile ----------------------------------------------------------------------------

    def profile(self, path: str = KERNEL_FILE, config: Mapping[str, Any] | None = None,
                shape: str = DEFAULT_PROFILE_SHAPE) -> str:
        by_name = {s.name: s for s in BENCH_SHAPES}
        if shape not in by_name:
            raise ToolArgumentError(f"profile: unknown shape {shape!r}; shapes: {', '.join(by_name)}")
        source, _, cfg, problem = self._load(path, config)
        prof_id = self.checker.cache.next_id("prof")
        if problem is not None:
            raise ToolFailure(f"prof#{prof_id} · {path} (sha {_sha8(source)})\n{problem}")
        header = self._header(f"prof#{prof_id}", path, source, cfg) + f" · shape {shape}"
        scfg, notes = self._simx_config(cfg)
        measured = self._measure(header, path, source, scfg, (by_name[shape],))
        dev = self.simx.device
        c = self.simx.cost(by_name[shape], measured[shape])
        res = c.resources
        busy = max(c.time_us - c.overhead_us, 1e-9)
        achieved_tbs = c.dram_bytes / (c.time_us * 1e-6) / 1e12
        peak_tbs = dev.dram_gbps / 1000
        tflops = c.flops / (c.time_us * 1e-6) / 1e12
        main = max(c.launches, key=lambda x: x.time_us)
        rows = [
            ("duration", f"{c.time_us:.1f} us (launches, program starts and host ops {c.overhead_us:.1f} us)"),
            ("launches", ", ".join(f"{x.kernel} {x.programs} programs ({x.time_us:.1f} us)" for x in c.launches)
             + (f"; {c.torch_ops} torch ops ({c.torch_us:.1f} us)" if c.torch_ops else "")),
            ("grid", f"{main.programs} programs · {main.slots} slots ({dev.compute_units} CUs x "
                     f"{res.occupancy} blocks/CU) · {main.waves:.2f} waves"),
            ("tail utilization", f"{100 * main.utilization:.1f}% of the last wave's slots busy"),
            ("occupancy", f"{res.occupancy} blocks/CU, {res.occupancy * main.warps} warps/CU "
                          f"(limited by {res.limiter})"),
            ("registers", f"{min(res.regs, dev.reg_cap)} per thread · spilled {res.spill_bytes} bytes/program"),
            ("shared memory", f"{res.smem} bytes/block"),
            ("compute", f"{c.compute_us:.1f} us busy · MMA efficiency {100 * c.compute_eff:.1f}% · "
                        f"{tflops:.1f} TFLOP/s achieved"),
            ("memory", f"{c.memory_us:.1f} us busy · {achieved_tbs:.2f} TB/s achieved of "
                       f"{peak_tbs:.2f} TB/s peak ({100 * achieved_tbs / peak_tbs:.1f}%)"),
            ("gather stalls", f"{c.gather_us:.1f} us ({100 * c.gather_us / max(c.memory_us, 1e-9):.1f}% "
                              "of memory time) on scattered rows (one activation per contiguous run)"),
            ("longest program", f"{c.longest_us:.1f} us ({100 * c.longest_us / busy:.1f}% of the kernel body)"),
            ("bound", c.bound),
        ]
        lines = [header, _device_line("simulated"), *notes, ""]
        lines += [f"  {k:<18} {v}" for k, v in rows]
        warnings = []
        if res.spilled_regs:
            warnings.append(f"register spills: {res.regs} registers needed per thread, cap reached")
        if c.spill_cliff:
            warnings.append("local-memory traffic: a tl.dot B tile is spilled")
        if c.bank_conflict:
            warnings.append("shared-memory bank conflicts: 4-way on a tl.dot B tile")
        if dev.quirk("stages_cap") is not None and main.stages > 2:
            warnings.append(f"pipeline: num_stages={main.stages} issued, 2 in flight "
                            "(deeper stages only cost shared memory)")
        if dev.quirk("warp_serialize") is not None and main.warps == 8 and main.slow > 1.0 and not (
                c.spill_cliff or c.bank_conflict or res.spilled_regs):
            warnings.append("warp scheduling: 8 warps on a tile of <= 32 rows serialize")
        if warnings:
            lines.append("")
            lines += [f"  warning: {w}" for w in warnings]
        lines += profile_sections(dev, by_name[shape], "measured", scfg, c, 1.0, source,
                                  persistent=False)
        return "\n".join(lines)

    # -- git --------------------------------------------------------------------------------

    def git_commit(self, message: str) -> str:
        if not message.strip():
            raise ToolArgumentError("git_commit: the message must not be empty")
        status = self.git.git("status", "--porcelain")
        if status.ok and not status.output.strip():
            raise ToolFailure("nothing to commit, working tree clean")
        result = self.git.commit(message)
        if not result.ok:
            raise ToolFailure(f"git commit failed:\n{result.output}")
        sha = self.git.head() or ""
        stat = self.git.git("show", "--stat", "--format=", "HEAD").output
        return f"[main {sha[:7]}] {message.splitlines()[0]}\n{stat}".rstrip()

    def git_log(self, max_count: int = 20) -> str:
        result = self.git.git("log", f"--max-count={max_count}", "--format=%h %s")
        if not result.ok:
            raise ToolFailure(f"git log failed:\n{result.output}")
        total = self.git.commit_count()
        more = f"\n… {total - max_count} older commits" if total > max_count else ""
        return result.output + more

    def git_diff(self, rev: str = "HEAD", path: str | None = None) -> str:
        if self.git.resolve(rev) is None:
            raise ToolFailure(f"error: unknown revision {rev!r}; see git_log")
        args = ["diff", rev, "--"]
        if path is not None:
            self.workspace.resolve(path)
            args.append(path)
        result = self.git.git(*args)
        if not result.ok:
            raise ToolFailure(f"git diff failed:\n{result.output}")
        return result.output or f"no changes against {rev}"

    def git_checkout(self, rev: str, path: str | None = None) -> str:
        sha = self.git.resolve(rev)
        if sha is None:
            raise ToolFailure(f"error: unknown revision {rev!r}; see git_log")
        if path is not None:
            self.workspace.resolve(path)
        result = self.git.git("checkout", sha, "--", path or ".")
        if not result.ok:
            raise ToolFailure(f"git checkout failed:\n{result.output}")
        what = path or "all files"
        return (f"restored {what} from {sha[:7]} ({self.git.subject(sha)}); HEAD is unchanged — "
                "commit to record it")

    # -- submit -----------------------------------------------------------------------------

    def submit(self, path: str = KERNEL_FILE, config: Mapping[str, Any] | None = None) -> str:
        source, _, cfg, problem = self._load(path, config)
        lines = [f"submission · {path} (sha {_sha8(source)}) · {config_text(cfg)}"]
        # Never from the cache: the held-out verdict is recomputed by the judge at submit.
        heldout = self.checker.check(path, source=source, config=cfg, seed=self.seed,
                                     split="heldout", use_cache=False)
        verdict = "PASSED" if heldout.passed else "FAILED"
        lines.append(f"held-out correctness: {heldout.eval_ref} {verdict} "
                     f"({len(heldout.cases)}/{heldout.cases_total} cases ran)")
        speedup = 0.0
        bench_ref = None
        if not heldout.passed:
            lines.append(heldout.render())
            reason = "held-out correctness failed"
        else:
            reason = ""
            try:
                text, speedup = self._benchmark(path, config)
                bench_ref = text.split(" ", 1)[0]
                lines += ["", text]
            except ToolFailure as exc:
                lines += ["", str(exc)]
                reason = "the final benchmark failed"
        del problem  # reported through the held-out check and the benchmark
        lines.append("")
        lines.append(f"SCORE: final speedup {speedup:.2f}x" + (f" ({reason})" if reason else ""))
        self.last_submission = {"source_sha": _sha8(source), "config": dict(cfg),
                                "heldout": heldout.eval_ref, "heldout_passed": heldout.passed,
                                "benchmark": bench_ref, "speedup": round(speedup, 4),
                                "device": self.device}
        return "\n".join(lines)


# -- rendering helpers -----------------------------------------------------------------------


def _tiling_key(cfg: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={cfg[k]}" for k in sorted(cfg) if k not in ("num_warps", "num_stages"))


def with_launch_params(measured: Mapping[str, Any], warps: int, stages: int, new_warps: int,
                       new_stages: int) -> dict[str, Any]:
    """The measurement with launches made at (warps, stages) re-launched at the new values."""
    out: dict[str, Any] = {}
    for name, m in measured.items():
        launches = []
        for launch in m["launches"]:
            if launch["num_warps"] == warps and launch["num_stages"] == stages:
                launch = {**launch, "num_warps": new_warps, "num_stages": new_stages}
            launches.append(launch)
        out[name] = {**m, "launches": launches}
    return out


def _device_line(label: str, name: str = DEVICE_NAME) -> str:
    if label == "simulated":
        return (f"device: {name} · simulated (the kernel's work counted in the Triton interpreter, "
                f"timed by the {DEVICE_NAME} device model; no hardware ran it)")
    return f"device: {name} · gpu (times from triton.testing.do_bench, median)"


def _syntax_error(exc: SyntaxError, path: str) -> str:
    lines = [f'  File "{path}", line {exc.lineno}']
    if exc.text:
        lines.append("    " + exc.text.rstrip("\n").strip())
        if exc.offset:
            indent = len(exc.text) - len(exc.text.lstrip())
            lines.append("    " + " " * max(0, exc.offset - 1 - indent) + "^")
    lines.append(f"SyntaxError: {exc.msg}")
    return "\n".join(lines)


def _launch_line(source: str) -> int | None:
    for i, line in enumerate(source.splitlines(), start=1):
        if re.search(r"\[\s*grid\s*\]\s*\(", line):
            return i
    return None


def _oor_traceback(path: str, source: str, line: str) -> list[str]:
    out = ["Traceback (most recent call last):"]
    at = _launch_line(source)
    if at is not None:
        out += [f'  File "{path}", line {at}, in launch', "    " + source.splitlines()[at - 1].strip()]
    out += ['  File "triton/runtime/jit.py", in run', "    kernel = self.compile(src, target=target, options=options.__dict__)",
            '  File "triton/compiler/compiler.py", in _init_handles', "    raise OutOfResources(self.metadata.shared, max_shared, \"shared memory\")",
            line]
    return out


def _compile_failure(result: CheckResult, source: str) -> list[str]:
    err = result.error or {}
    if result.status == "compile_error":
        return ["COMPILE ERROR", err.get("tail") or err.get("message", "")]
    if result.status == "error":
        where = err.get("where")
        tail = err.get("tail", "")
        if where and "triton/" in tail:
            code = where.get("code") or ""
            lines = source.splitlines()
            raw = lines[where["line"] - 1] if 0 < where["line"] <= len(lines) else code
            col = len(raw) - len(raw.lstrip())
            kind, message = err.get("type", "Error"), err.get("message", "")
            # The interpreter wraps the real error: InterpreterError("ValueError('...')").
            while inner := re.match(r"""^(\w+)\((["'])(.*)\2\)$""", message, re.S):
                kind, message = inner[1], inner[3]
            last = f"{kind}: {message}"
            return [f"triton.compiler.errors.CompilationError: at {where['line']}:{col}:",
                    raw.rstrip(), " " * col + "^", last]
        return ["ERROR while launching the kernel on the compile case", tail or err.get("message", "")]
    # timeouts, crashes, memory limits, sandbox violations: the checker's own words
    return result.render().splitlines()[3:]
