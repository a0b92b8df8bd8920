"""The kernel-optimization workload (DESIGN.md §4).

An agent optimizes an original Triton extend-attention kernel in a confined workspace.
This package holds the task (``assets/``: the kernel, the PyTorch reference, HARNESS.md),
the case generator, the sandboxed correctness checker (with its warm worker), SIMX-1 (the
simulated target device, ``simx.py``) and every tool behind one dispatcher
(``KernelTools``, ``kernel_tools.py``). Nothing here
imports torch or triton at module level: they are loaded only inside the sandbox child.
"""

from ctxmem.workloads.kernel.bugs import BUGS, CATALOG, Bug
from ctxmem.workloads.kernel.cases import CaseSpec, dev_cases, heldout_cases, suite
from ctxmem.workloads.kernel.correctness import (
    DEFAULT_CONFIG,
    TOLERANCES,
    CaseResult,
    CheckResult,
    CorrectnessChecker,
)
from ctxmem.workloads.kernel.kernel_tools import ALL_TOOL_SCHEMAS, KernelTools, kernel_tool_specs
from ctxmem.workloads.kernel.sandbox import SandboxLimits, SandboxOutcome, run_job
from ctxmem.workloads.kernel.simx import BENCH_SHAPES, Device, Simx
from ctxmem.workloads.kernel.tools import FILE_TOOL_SCHEMAS, FileTools, ToolOutput, tool_specs
from ctxmem.workloads.kernel.variants import RUNGS, rung_source
from ctxmem.workloads.kernel.workspace import PathEscapeError, Workspace, WorkspaceError

__all__ = [
    "ALL_TOOL_SCHEMAS",
    "BENCH_SHAPES",
    "BUGS",
    "CATALOG",
    "DEFAULT_CONFIG",
    "FILE_TOOL_SCHEMAS",
    "RUNGS",
    "TOLERANCES",
    "Bug",
    "CaseResult",
    "CaseSpec",
    "CheckResult",
    "CorrectnessChecker",
    "Device",
    "FileTools",
    "KernelTools",
    "PathEscapeError",
    "SandboxLimits",
    "SandboxOutcome",
    "Simx",
    "ToolOutput",
    "Workspace",
    "WorkspaceError",
    "dev_cases",
    "heldout_cases",
    "kernel_tool_specs",
    "run_job",
    "rung_source",
    "suite",
    "tool_specs",
]
