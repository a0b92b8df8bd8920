"""Without the kernel extras, the kernel workload stops before starting, with the install line."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from click.testing import CliRunner

from ctxmem.cli.workload import workload


@pytest.mark.parametrize("command", [["kernel", "run"], ["kernel", "compare"]])
def test_kernel_workload_without_torch_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
                                                           command: list[str]) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "torch" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    res = CliRunner().invoke(workload, [*command, "--db", str(tmp_path / "k.db")])
    assert res.exit_code == 1
    assert 'pip install "ctxmem[kernels]"' in res.output and "'torch'" in res.output
    assert "Traceback" not in res.output and "speedup" not in res.output
    assert not (tmp_path / "k.db").exists()  # nothing was started
