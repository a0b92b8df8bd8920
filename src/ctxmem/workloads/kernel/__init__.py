"""The kernel-optimization workload (DESIGN.md §4).

An agent optimizes an original Triton extend-attention kernel in a confined workspace.
This package holds the task (``assets/``: the kernel, the PyTorch reference, HARNESS.md),
the case generator, the sandboxed correctness checker and the file tools. Nothing here
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
from ctxmem.workloads.kernel.sandbox import SandboxLimits, SandboxOutcome, run_job
from ctxmem.workloads.kernel.tools import FILE_TOOL_SCHEMAS, FileTools, ToolOutput, tool_specs
from ctxmem.workloads.kernel.workspace import PathEscapeError, Workspace, WorkspaceError

__all__ = [
    "BUGS",
    "CATALOG",
    "DEFAULT_CONFIG",
    "FILE_TOOL_SCHEMAS",
    "TOLERANCES",
    "Bug",
    "CaseResult",
    "CaseSpec",
    "CheckResult",
    "CorrectnessChecker",
    "FileTools",
    "PathEscapeError",
    "SandboxLimits",
    "SandboxOutcome",
    "ToolOutput",
    "Workspace",
    "WorkspaceError",
    "dev_cases",
    "heldout_cases",
    "run_job",
    "suite",
    "tool_specs",
]
