"""CLI start-up: subcommands load lazily, and ``--help`` lists them without importing them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from ctxmem.cli import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_static_short_help_is_the_commands_own_first_line(name: str) -> None:
    target, short = COMMANDS[name]
    module, attr = target.split(":")
    cmd = getattr(importlib.import_module(module), attr)
    assert short == (cmd.help or "").strip().splitlines()[0]
    assert cli.get_command(None, name) is cmd  # type: ignore[arg-type]


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_help_imports_no_subcommand_and_no_library_layer() -> None:
    loaded = _modules_after(
        "from click.testing import CliRunner\nfrom ctxmem.cli import cli\n"
        "r = CliRunner().invoke(cli, ['--help'])\nassert r.exit_code == 0 and 'sessions' in r.output, r.output"
    )
    heavy = {"ctxmem.agent", "ctxmem.context", "ctxmem.store", "ctxmem.session", "ctxmem.config", "pydantic",
             "ctxmem.cli.sessions", "ctxmem.cli.evals", "ctxmem.cli.workload"}
    assert not heavy & loaded


def test_import_ctxmem_is_lazy_but_every_public_name_resolves() -> None:
    import ctxmem

    loaded = _modules_after("import ctxmem")
    assert "ctxmem.agent" not in loaded and "ctxmem.context" not in loaded
    for name in ctxmem.__all__:
        assert getattr(ctxmem, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ctxmem.nope  # noqa: B018
