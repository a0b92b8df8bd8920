"""The ``ctxmem`` command line: click, noun-verb groups.

Every read command takes ``--json``. Errors print as one line on stderr and exit 1 (2 for
usage errors), never as a traceback; ``CTXMEM_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from ctxmem.cli._common import LazyGroup

# Subcommands load when invoked, not at start-up: each pulls in its part of the library
# (sessions: the store and JSONL import; eval: the evaluator; workload: torch/triton
# probes), and ``ctxmem --help`` lists them from the short help given here (the first
# line of each command's docstring; tests/test_cli_startup.py checks they agree).
COMMANDS: dict[str, tuple[str, str]] = {
    "sessions": ("ctxmem.cli.sessions:sessions", "Recorded agent sessions."),
    "strategies": ("ctxmem.cli.strategies:strategies", "Context strategies and presets."),
    "context": ("ctxmem.cli.context:context", "Build contexts from recorded sessions."),
    "tune": ("ctxmem.cli.tune:tune", "Cost models, budget sweeps and KV-cache estimates."),
    "eval": ("ctxmem.cli.evals:eval_group", "Needle-in-a-haystack evaluation of models and context strategies."),
    "workload": ("ctxmem.cli.workload:workload", "Driving workloads that produce long, realistic agent sessions."),
    "demo": ("ctxmem.cli.demo:demo", "Record and summarize a bundled million-token agent session (offline)."),
    "mcp": ("ctxmem.cli.mcp:mcp", "Serve the session store to MCP hosts (Claude Desktop, Claude Code, agent SDKs)."),
}


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ctxmem")
def cli() -> None:
    """ctxmem: memory and context management for long-running LLM agents."""


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="ctxmem", standalone_mode=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["cli", "main"]
