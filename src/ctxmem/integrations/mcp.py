"""An MCP server over a ctxmem session store: ``ctxmem mcp serve --store URL`` (or ``--db PATH``).

The store is opened with :func:`ctxmem.store.open_store` like every other command:
``sqlite:///file.db`` or a bare SQLite path (which must already exist: a read-only server
creates nothing), ``postgresql://user@host/db`` (a store shared by many hosts), or
``memory:``; ``$CTXMEM_STORE`` supplies it when no option is given.

Any MCP host (Claude Desktop, Claude Code, an Agents SDK ``MCPServerStdio``, Inspect) can
then read the sessions ctxmem recorded, recall masked tool outputs, build a session's
context under a preset, and keep per-session memory files. Transports: stdio (the default)
and streamable HTTP (``--transport http``, served at ``/mcp``).

Tools:

=================  =========================================================================
``list_sessions``  id, title, creation time, head event and event count of every session
``search``         full-text (FTS5) search over tool outputs; ``dense=true`` adds embedding
                   search fused by reciprocal rank (needs numpy; MiniLM when installed,
                   else feature hashing — the reply names the embedder)
``recall``         a tool output by handle (its ``tool_use_id``) with optional ``lines``
                   range and ``grep`` regex — the same ``recall`` masking hands the model
``build_context``  the context a preset builds for a session: messages (Anthropic shape)
                   and the strategy's report. A dry run unless the server allows writes.
``memory``         Anthropic memory-tool commands (``view``, ``create``, ``str_replace``,
                   ``insert``, ``delete``, ``rename``) over ``/memories`` of one session
=================  =========================================================================

**Read-only by default.** Without ``--allow-writes`` no session, event or memory file is
written (searches embed into a throwaway in-memory cache, builds are dry runs) and
``memory`` allows only ``view``. With it, ``memory`` edits files and ``build_context``
records compactions. One derived write remains: ``build_context`` over a session that was
never counted in the preset's tokenizer stores those counts once (the store's count cache,
what any reader of the session adds; sessions recorded or imported with that tokenizer,
``--tokenizer o200k_base``, need none).

**Memory files cannot escape.** Each session's memory directory is
``<memory-dir>/<session id>/`` (default ``<db stem>-memories`` beside a SQLite database;
for a store with no file, such as PostgreSQL, ``$XDG_DATA_HOME/ctxmem/memories/<host>-<db>``,
so every server on one machine for the same database shares it). A path
must start with ``/memories``; it is resolved (symlinks included) and refused unless it
stays inside that session's directory. The memory tool serves only sessions of the store; an
id made of ``[A-Za-z0-9._-]`` is its folder's name, any other (``user@example.com``) is
percent-encoded into one folder name starting with ``%``. A read-only server creates no folder.

Errors come back as MCP tool errors whose text is ctxmem's one-line message.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from ctxmem.errors import InputError, InvalidConversationError, MissingDependencyError

MEMORY_PREFIX = "/memories"
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _require_mcp() -> Any:
    try:
        from mcp.server.mcpserver import MCPServer
    except ImportError:
        raise MissingDependencyError("mcp", "mcp", "the ctxmem MCP server") from None
    return MCPServer


class MemoryFiles:
    """The Anthropic memory tool's file commands over one root folder (one folder per session)."""

    def __init__(self, root: str | Path, *, writable: bool):
        self.root = Path(root)
        self.writable = writable

    def _dir(self, session_id: str) -> Path:
        if not isinstance(session_id, str) or not session_id or len(session_id) > 200:
            raise InputError("a session id of 1 to 200 characters is needed", field="session_id")
        if _SAFE_ID.fullmatch(session_id) and session_id not in (".", ".."):
            return self.root / session_id
        # any other id (user@example.com, a/b) is one folder, percent-encoded: no separators,
        # no "." or ".." (a plain safe id is its own folder name, as before)
        return self.root / ("%" + quote(session_id, safe="").replace(".", "%2E"))

    def resolve(self, session_id: str, path: str) -> Path:
        """``/memories/...`` → a real path inside the session's folder, or InputError."""
        if not isinstance(path, str) or not (path == MEMORY_PREFIX or path.startswith(MEMORY_PREFIX + "/")):
            raise InputError(f"path {path!r} must start with {MEMORY_PREFIX}/", field="path")
        rel = path[len(MEMORY_PREFIX):].lstrip("/")
        parts = [p for p in rel.split("/") if p]
        if any(p in ("..", ".") or "\\" in p or "\x00" in p for p in parts):
            raise InputError(f"path {path!r} may not contain '.', '..', backslashes or NUL", field="path")
        base = self._dir(session_id)
        if self.writable:  # a read-only server leaves no folder behind (a view of none is empty)
            base.mkdir(parents=True, exist_ok=True)
        real_base = base.resolve()
        target = (real_base.joinpath(*parts)).resolve()
        if target != real_base and not target.is_relative_to(real_base):
            raise InputError(f"path {path!r} escapes the memory directory", field="path")
        return target

    def _write_check(self, command: str) -> None:
        if not self.writable:
            raise InputError(
                f"memory {command!r} is refused: this server is read-only; restart it with --allow-writes",
                field="command",
            )

    def _show(self, session_id: str, p: Path) -> str:
        base = self._dir(session_id).resolve()
        rel = p.relative_to(base).as_posix()
        return MEMORY_PREFIX + ("/" + rel if rel != "." else "")

    def run(self, session_id: str, command: str, args: dict[str, Any]) -> str:
        """Run one memory-tool command (view, create, str_replace, insert, delete, rename) in
        the session's memory folder; paths that leave it are refused."""
        if command == "view":
            return self.view(session_id, args.get("path") or MEMORY_PREFIX, args.get("view_range"))
        self._write_check(command)
        if command == "create":
            p = self.resolve(session_id, args.get("path", ""))
            if p == self._dir(session_id).resolve():
                raise InputError("create needs a file path below /memories", field="path")
            text = args.get("file_text")
            if not isinstance(text, str):
                raise InputError("create needs 'file_text'", field="file_text")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text, encoding="utf-8")
            return f"File created successfully at: {self._show(session_id, p)}"
        if command == "str_replace":
            p = self._file(session_id, args.get("path", ""))
            old, new = args.get("old_str"), args.get("new_str", "")
            if not isinstance(old, str) or not old:
                raise InputError("str_replace needs a non-empty 'old_str'", field="old_str")
            text = p.read_text(encoding="utf-8")
            n = text.count(old)
            if n != 1:
                where = "not found" if n == 0 else f"found {n} times; make it unique"
                raise InputError(f"old_str {where} in {self._show(session_id, p)}", field="old_str")
            p.write_text(text.replace(old, str(new)), encoding="utf-8")
            return f"The memory file {self._show(session_id, p)} has been edited."
        if command == "insert":
            p = self._file(session_id, args.get("path", ""))
            line, ins = args.get("insert_line"), args.get("insert_text")
            lines = p.read_text(encoding="utf-8").splitlines(keepends=True)
            if not isinstance(line, int) or not 0 <= line <= len(lines):
                raise InputError(f"insert_line must be an integer from 0 to {len(lines)}", field="insert_line")
            if not isinstance(ins, str):
                raise InputError("insert needs 'insert_text'", field="insert_text")
            if line and not lines[line - 1].endswith("\n"):
                lines[line - 1] += "\n"
            lines.insert(line, ins if ins.endswith("\n") else ins + "\n")
            p.write_text("".join(lines), encoding="utf-8")
            return f"The memory file {self._show(session_id, p)} has been edited."
        if command == "delete":
            p = self.resolve(session_id, args.get("path", ""))
            if p == self._dir(session_id).resolve():
                raise InputError("refusing to delete the /memories root", field="path")
            if not p.exists():
                raise InputError(f"{args.get('path')} does not exist", field="path")
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
            return f"Deleted {args.get('path')}"
        if command == "rename":
            src = self.resolve(session_id, args.get("old_path", ""))
            dst = self.resolve(session_id, args.get("new_path", ""))
            if not src.exists():
                raise InputError(f"{args.get('old_path')} does not exist", field="old_path")
            if dst.exists():
                raise InputError(f"{args.get('new_path')} already exists", field="new_path")
            dst.parent.mkdir(parents=True, exist_ok=True)
            src.rename(dst)
            return f"Renamed {args.get('old_path')} to {args.get('new_path')}"
        raise InputError(
            f"unknown memory command {command!r}; expected view, create, str_replace, insert, delete or rename",
            field="command",
        )

    def _file(self, session_id: str, path: str) -> Path:
        p = self.resolve(session_id, path)
        if not p.is_file():
            raise InputError(f"{path} is not a file", field="path")
        return p

    def view(self, session_id: str, path: str, view_range: Any = None) -> str:
        """A folder's listing, or a file's numbered lines (optionally ``view_range`` [start, end])."""
        p = self.resolve(session_id, path)
        if path.rstrip("/") == MEMORY_PREFIX and not p.exists():
            return f"Directory {MEMORY_PREFIX}:"  # nothing written yet
        if p.is_dir():
            lines = [f"Directory {self._show(session_id, p)}:"]
            for child in sorted(p.rglob("*")):
                depth = len(child.relative_to(p).parts)
                if depth > 2 or any(part.startswith(".") for part in child.relative_to(p).parts):
                    continue
                size = child.stat().st_size if child.is_file() else 0
                lines.append(f"{size}\t{self._show(session_id, child)}{'/' if child.is_dir() else ''}")
            return "\n".join(lines)
        if not p.exists():
            raise InputError(f"{path} does not exist", field="path")
        text_lines = p.read_text(encoding="utf-8").splitlines()
        start, stop = 1, len(text_lines)
        if view_range:
            if (not isinstance(view_range, list | tuple) or len(view_range) != 2
                    or not all(isinstance(v, int) for v in view_range)):
                raise InputError("view_range must be [start, end] (1-based; end -1 for the last line)",
                                 field="view_range")
            start, stop = view_range[0], (len(text_lines) if view_range[1] == -1 else view_range[1])
        return "\n".join(f"{i:6d}\t{ln}" for i, ln in enumerate(text_lines[start - 1:stop], start=start))


def _tool_errors(fn: Any) -> Any:
    """ctxmem's own errors reach the client as the tool's error text (one clear line)."""
    import functools

    from mcp.server.mcpserver.exceptions import ToolError

    from ctxmem.errors import CtxmemError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CtxmemError as exc:
            raise ToolError(str(exc)) from None

    return wrapper


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite store URL or bare path names (``None``: not a SQLite file store)."""
    from ctxmem.store import store_scheme

    if store_scheme(url) != "sqlite":
        return None
    if not url.startswith("sqlite:"):
        return Path(url)
    rest = url.split(":", 1)[1]  # as open_store reads it: sqlite:///rel, sqlite:////abs, sqlite:// memory
    path = rest[3:] if rest.startswith("///") else rest[2:] if rest.startswith("//") else rest
    return Path(path) if path and path != ":memory:" else None


def _safe_label(url: str) -> str:
    """``host-db`` of a server URL, credentials and options left out (a folder name)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    label = f"{parts.hostname or 'local'}-{parts.port or ''}-{parts.path.strip('/') or parts.scheme}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_-") or "store"


def _open(store: Any) -> tuple[Any, Path | None, str]:
    """(store, its SQLite file or None, a display name) for a store object, a path or a URL."""
    from ctxmem.store import open_store

    if not isinstance(store, str | Path):
        path = Path(store.path) if getattr(store, "path", ":memory:") != ":memory:" else None
        return store, path, path.name if path else type(store).__name__
    url = str(store)
    file = _sqlite_file(url)
    if file is not None and not file.is_file():
        raise InputError(
            f"no session store at {file}; pass --store (or --db) naming an existing ctxmem database", field="store"
        )
    return open_store(url), file, file.name if file else _safe_label(url)


def create_server(
    store: Any,
    *,
    allow_writes: bool = False,
    memory_dir: str | Path | None = None,
    name: str = "ctxmem",
) -> Any:
    """The MCP server object (``mcp.server.mcpserver.MCPServer``) over ``store``: a store
    object, a SQLite path or any :func:`~ctxmem.store.open_store` URL."""
    MCPServer = _require_mcp()
    store, file, label = _open(store)
    if memory_dir is None:
        if file is not None:
            memory_dir = file.with_name(file.stem + "-memories")
        else:
            base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
            memory_dir = Path(base) / "ctxmem" / "memories" / label
    mem = MemoryFiles(memory_dir, writable=allow_writes)
    mode = "read-write" if allow_writes else "read-only"
    server = MCPServer(
        name,
        instructions=(
            f"ctxmem session store {label} ({mode}). list_sessions, then search/recall tool outputs, "
            "build_context under a preset, and keep notes with the memory tool under /memories."
        ),
    )

    builders: dict[tuple[str, str, int | None, str | None], Any] = {}
    building = threading.Lock()  # a kept builder is for one build at a time

    def _session(session_id: str) -> Any:
        from ctxmem.session import Session

        return Session.open(store, session_id)

    @server.tool()
    @_tool_errors
    def list_sessions() -> list[dict[str, Any]]:
        """List the recorded sessions: id, title, created_at, head_event_id, events."""
        out = []
        for info in store.list_sessions():
            out.append({
                "id": info.id,
                "title": info.title,
                "created_at": info.created_at,
                "head_event_id": info.head_event_id,
                "parent_session_id": info.parent_session_id,
                "events": store.event_count(info.id),
            })
        return out

    @server.tool()
    @_tool_errors
    def search(query: str, session_id: str | None = None, limit: int = 10, dense: bool = False) -> dict[str, Any]:
        """Full-text search over tool outputs (FTS5 syntax; bare words are ANDed). With dense=true and a
        session_id, embedding search is fused with it."""
        limit = max(1, min(int(limit), 100))
        if not dense:
            hits = store.search(query, session_id=session_id, limit=limit)
            return {"mode": "lexical", "hits": [
                {"event_id": h.event_id, "session_id": h.session_id, "handle": h.tool_use_id,
                 "tool": h.tool_name, "snippet": h.snippet, "score": h.score} for h in hits]}
        if session_id is None:
            raise InputError("dense search needs a session_id", field="session_id")
        from ctxmem.retrieval import HybridRetriever, MemoryEmbeddingCache

        cache: Any = None if allow_writes else MemoryEmbeddingCache()
        retriever = HybridRetriever.for_session(_session(session_id), "auto", **({"cache": cache} if cache else {}))
        retriever.update()
        found = retriever.search(query, k=limit)
        return {"mode": "hybrid", "embedder": retriever.describe().get("embedder"), "hits": [
            {"event_id": h.event_id, "session_id": session_id, "handle": h.document.tool_use_id,
             "tool": h.document.tool_name, "snippet": h.document.text[:300], "score": h.score,
             "sources": list(h.sources)} for h in found]}

    @server.tool()
    @_tool_errors
    def recall(session_id: str, handle: str, lines: str | None = None, grep: str | None = None,
               max_chars: int = 50_000) -> str:
        """The original output of a tool call by handle (its tool_use_id), optionally a 1-based line range
        like '10-40' and/or only the lines matching a regular expression."""
        from ctxmem.context.masking import RecallTool

        args: dict[str, Any] = {"handle": handle, "max_chars": max_chars}
        if lines:
            args["lines"] = lines
        if grep:
            args["grep"] = grep
        return RecallTool(session=_session(session_id))(args)

    @server.tool()
    @_tool_errors
    def build_context(session_id: str, preset: str, context_window: int | None = None,
                      system: str | None = None, messages: bool = True) -> dict[str, Any]:
        """Build the next request's context for a session under a preset (ctxmem strategies list) and
        report what the strategy kept, masked, summarized and dropped."""
        with building:
            return _build_context(session_id, preset, context_window, system, messages)

    def _build_context(session_id: str, preset: str, context_window: int | None, system: str | None,
                       messages: bool) -> dict[str, Any]:
        from ctxmem.config import load_preset
        from ctxmem.integrations._common import LoopBuilder
        from ctxmem.messages import to_anthropic

        session = _session(session_id)
        # one builder per (session, preset, window, system), kept across calls: a host that asks
        # every turn gets incremental builds (the History is followed, the strategy's caches stay
        # warm) instead of a cold build over the whole session each time
        key = (session_id, preset, context_window, system)
        builder = builders.get(key)
        if builder is None:
            if len(builders) >= 16:
                builders.pop(next(iter(builders)))
            builder = builders[key] = LoopBuilder(load_preset(preset), context_window=context_window, system=system,
                                                  record=allow_writes)
        try:
            lb, waiting = builder.build_session(session), None
        except InvalidConversationError:
            # a live session whose agent is running tools ends in calls still waiting for their
            # results: built up to that turn, which follows as it is (a reader cannot answer them)
            spans = session.messages_with_ids()
            waiting = spans[-1][0] if spans and spans[-1][0].role == "assistant" and spans[-1][0].tool_uses else None
            if waiting is None:
                raise
            spans = spans[:-1]
            lb = builder.build(session, [m for m, _ in spans], [e for _, e in spans])
        out: dict[str, Any] = {"session": session_id, "preset": builder.preset.name,
                               "report": lb.built.report.to_json(),
                               "extra_tools": [t.name for t in lb.built.extra_tools]}
        if waiting is not None:
            out["waiting_tool_calls"] = [u.id for u in waiting.tool_uses]
        if messages:
            out["messages"] = to_anthropic([*lb.messages, *([waiting] if waiting is not None else [])])
        return out

    @server.tool()
    @_tool_errors
    def memory(
        session_id: str,
        command: Literal["view", "create", "str_replace", "insert", "delete", "rename"],
        path: str | None = None,
        file_text: str | None = None,
        old_str: str | None = None,
        new_str: str | None = None,
        insert_line: int | None = None,
        insert_text: str | None = None,
        old_path: str | None = None,
        new_path: str | None = None,
        view_range: list[int] | None = None,
    ) -> str:
        """Anthropic memory-tool commands over this session's /memories folder: view, create, str_replace,
        insert, delete, rename. Paths start with /memories. Read-only servers allow only view."""
        args = {k: v for k, v in {
            "path": path, "file_text": file_text, "old_str": old_str, "new_str": new_str,
            "insert_line": insert_line, "insert_text": insert_text, "old_path": old_path,
            "new_path": new_path, "view_range": view_range}.items() if v is not None}
        _session(session_id)  # a session of this store (SessionNotFoundError): no folder for any other id
        return mem.run(session_id, command, args)

    server.ctxmem_store = store
    return server


def serve(
    store: Any,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    allow_writes: bool = False,
    memory_dir: str | Path | None = None,
) -> None:
    """Run the server until the client disconnects (stdio) or the process is stopped (http)."""
    server = create_server(store, allow_writes=allow_writes, memory_dir=memory_dir)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)


__all__ = ["MemoryFiles", "create_server", "serve"]
