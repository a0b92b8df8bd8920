"""The ``ctxmem`` command line: click, noun-verb groups.

Every read command takes ``--json``. Errors print as one line on stderr and exit 1 (2 for
usage errors), never as a traceback; ``CTXMEM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ctxmem.cli._common import CtxmemGroup
from ctxmem.cli.context import context
from ctxmem.cli.demo import demo
from ctxmem.cli.evals import eval_group
from ctxmem.cli.mcp import mcp
from ctxmem.cli.sessions import sessions
from ctxmem.cli.strategies import strategies
from ctxmem.cli.tune import tune
from ctxmem.cli.workload import workload


@click.group(cls=CtxmemGroup)
@click.version_option(package_name="ctxmem")
def cli() -> None:
    """ctxmem: memory and context management for long-running LLM agents."""


cli.add_command(sessions)
cli.add_command(strategies)
cli.add_command(context)
cli.add_command(tune)
cli.add_command(eval_group)
cli.add_command(workload)
cli.add_command(demo)
cli.add_command(mcp)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="ctxmem", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["cli", "main"]
