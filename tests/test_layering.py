"""The seam between workloads and everything above the store: pinned by parsing imports.

Nothing in ``context``, ``store``, ``tokens``, ``retrieval``, ``evals``, ``tune``,
``clients`` or ``agent`` imports a concrete workload (``ctxmem.workloads.<name>``, or
``ctxmem.samples``, which re-exports the synthetic one): they reach workloads only through
the protocol and registry in ``ctxmem.workloads`` / ``ctxmem.workloads.base``. Lazy imports
inside functions count too — the test reads every import statement, not just the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ctxmem"
LAYERS = ("context", "store", "tokens", "retrieval", "evals", "tune", "clients", "agent.py")
ALLOWED = {"ctxmem.workloads", "ctxmem.workloads.base"}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            if node.module == "ctxmem.workloads":  # `from ctxmem.workloads import kernel`
                out += [(node.lineno, f"ctxmem.workloads.{a.name}") for a in node.names
                        if (SRC / "workloads" / a.name).is_dir()]
    return out


def _violations(path: Path) -> list[str]:
    bad = []
    for line, module in _imports(path):
        concrete = module.startswith("ctxmem.workloads.") and module not in ALLOWED
        if concrete or module == "ctxmem.samples":
            bad.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_below_the_cli_imports_a_concrete_workload(layer: str) -> None:
    root = SRC / layer
    files = [root] if root.suffix == ".py" else sorted(root.rglob("*.py"))
    assert files
    bad = [v for f in files for v in _violations(f)]
    assert not bad, "\n".join(bad)


def test_the_checker_catches_a_concrete_import(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from ctxmem.workloads.kernel.run import run_scripted\n"
                 "from ctxmem.workloads import WORKLOADS, kernel\nimport ctxmem.samples\n")
    got = [v.split(" imports ")[1] for v in _violations_at(f)]
    assert got == ["ctxmem.workloads.kernel.run", "ctxmem.workloads.kernel", "ctxmem.samples"]


def _violations_at(path: Path) -> list[str]:
    bad = []
    for line, module in sorted(_imports(path)):
        if (module.startswith("ctxmem.workloads.") and module not in ALLOWED) or module == "ctxmem.samples":
            bad.append(f"{path.name}:{line} imports {module}")
    return bad


def test_the_kernel_workload_has_no_import_cycle_between_sandbox_and_worker() -> None:
    kernel = SRC / "workloads" / "kernel"
    worker = {m for _, m in _imports(kernel / "worker.py")}
    sandbox = {m for _, m in _imports(kernel / "sandbox.py")}
    assert not ("ctxmem.workloads.kernel.sandbox" in worker and "ctxmem.workloads.kernel.worker" in sandbox)
    assert "ctxmem.workloads.kernel.sandbox" not in worker  # the worker sits below the sandbox
