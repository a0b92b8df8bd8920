"""``ctxmem mcp serve``: the session store as an MCP server (see :mod:`ctxmem.integrations.mcp`)."""

from __future__ import annotations

import click

from ctxmem.cli._common import CtxmemGroup, db_option


@click.group(cls=CtxmemGroup)
def mcp() -> None:
    """Serve the session store to MCP hosts (Claude Desktop, Claude Code, agent SDKs)."""


@mcp.command("serve")
@db_option
@click.option("--transport", type=click.Choice(["stdio", "http"]), default="stdio", show_default=True,
              help="stdio for a host that starts the server; http for streamable HTTP at /mcp.")
@click.option("--host", default="127.0.0.1", show_default=True, help="HTTP bind address.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="HTTP port.")
@click.option("--allow-writes", is_flag=True, help="Allow memory edits and recorded compactions (read-only otherwise).")
@click.option("--memory-dir", type=click.Path(file_okay=False), default=None,
              help="Root of the per-session memory folders [default: <db stem>-memories beside a SQLite file; "
                   "$XDG_DATA_HOME/ctxmem/memories/<host>-<db> for a server store].")
def serve_cmd(db_path: str, transport: str, host: str, port: int, allow_writes: bool, memory_dir: str | None) -> None:
    """Run the MCP server over a session store (--store URL or --db PATH): list_sessions, search,
    recall, build_context and memory tools."""
    from ctxmem.integrations.mcp import serve

    serve(db_path, transport="http" if transport == "http" else "stdio", host=host, port=port,
          allow_writes=allow_writes, memory_dir=memory_dir)
