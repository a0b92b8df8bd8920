"""Shared CLI plumbing: the error boundary, the --db option, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ctxmem.errors import CtxmemError

F = TypeVar("F", bound=Callable[..., Any])


def default_db() -> str:
    """$CTXMEM_STORE (a store URL or path), else $CTXMEM_DB, else
    $XDG_DATA_HOME/ctxmem/sessions.db (~/.local/share/ctxmem/sessions.db)."""
    for var in ("CTXMEM_STORE", "CTXMEM_DB"):
        if os.environ.get(var):
            return os.environ[var]
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "ctxmem" / "sessions.db")


#: every ctxmem command takes -h as well as --help. Set on each command, not only inherited
#: from the root: click caches a command's help option the first time it is built, so a
#: group once invoked on its own (tests, python -m) would otherwise lose -h for good.
HELP_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def _with_help(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs["context_settings"] = {**HELP_SETTINGS, **(kwargs.get("context_settings") or {})}
    return kwargs


class CtxmemGroup(click.Group):
    """A group whose commands turn ctxmem errors into one clear line and exit code 1."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **_with_help(kwargs))

    def command(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`click.Group.command`, with ``-h`` as help."""
        return super().command(*args, **_with_help(kwargs))

    def group(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`click.Group.group`, with ``-h`` as help."""
        return super().group(*args, **_with_help(kwargs))

    def invoke(self, ctx: click.Context) -> Any:
        # the subcommand's arguments (the group hands them on and clears them): --json asked
        wants_json = "--json" in ctx.args
        try:
            return super().invoke(ctx)
        except CtxmemError as exc:
            if os.environ.get("CTXMEM_DEBUG"):
                raise
            click.echo(f"error: {exc}", err=True)
            if wants_json:  # a script reading --json output gets the error as JSON on stdout too
                _echo_json_error(error_json(exc))
            sys.exit(1)
        except BrokenPipeError:
            # the reader went away (`ctxmem sessions show ... | head -1`): not an error of ours
            _quiet_stdout()
            sys.exit(0)
        except OSError as exc:
            # a folder that cannot be made, an output file that cannot be written, a full disk
            if os.environ.get("CTXMEM_DEBUG"):
                raise
            line = os_error_line(exc)
            click.echo(f"error: {line}", err=True)
            if wants_json:  # as for ctxmem errors: a script reading --json gets the error as JSON
                err: dict[str, Any] = {"type": type(exc).__name__, "message": line}
                if exc.filename is not None:
                    err["source"] = str(exc.filename)
                _echo_json_error(err)
            sys.exit(1)


def _echo_json_error(err: dict[str, Any]) -> None:
    # stdout itself may be what failed (a closed pipe, a full disk): stderr has said it
    with contextlib.suppress(OSError):
        click.echo(json.dumps({"error": err}, ensure_ascii=False))


def error_json(exc: CtxmemError) -> dict[str, Any]:
    """A ctxmem error as JSON fields: its type, its one-line message, and where it names a
    place (``source``, ``line``, ``field``) those too."""
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in ("source", "line", "field"):
        value = getattr(exc, name, None)
        if value is not None and value != "":
            out[name] = str(value) if name == "source" else value
    return out


def os_error_line(exc: OSError) -> str:
    """An OSError as one line: what failed and on which path (``No space left on device:
    /dev/full``), never a traceback."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = [str(f) for f in (exc.filename, exc.filename2) if f is not None]
    return f"{what}: {' -> '.join(where)}" if where else what


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of a closed pipe is silent."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout (captured in tests)
        pass


class LazyGroup(CtxmemGroup):
    """A group whose subcommands are imported only when run (``lazy_commands``: name ->
    ("module:attribute", short help)); listing them in ``--help`` imports nothing."""

    def __init__(self, *args: Any, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            import importlib

            target = self.lazy_commands[cmd_name][0]
            module, attr = target.split(":")
            cmd = getattr(importlib.import_module(module), attr)
            self.add_command(cmd, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name in self.lazy_commands and name not in self.commands:
                help_text = self.lazy_commands[name][1]
                rows.append((name, help_text if len(help_text) <= limit else help_text[: limit - 3].rstrip() + "..."))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def db_option(fn: F) -> F:
    """``--store URL`` (any :func:`ctxmem.store.open_store` URL: ``sqlite:///file.db``,
    ``postgresql://…``, ``memory:``) with ``--db PATH`` as the SQLite shorthand; both fill
    ``db_path``, opened with :func:`open_db`."""
    return click.option(
        "--store",
        "--db",
        "db_path",
        default=default_db,
        show_default="$CTXMEM_STORE, $CTXMEM_DB or ~/.local/share/ctxmem/sessions.db",
        type=click.Path(dir_okay=False),  # a URL passes: it names no existing directory
        help="Session store: a URL (postgresql://user@host/db, sqlite:///file.db) or a SQLite file path (--db).",
    )(fn)


def open_db(db_path: str) -> Any:
    """The session store ``--store``/``--db`` names, created if it is a new SQLite file."""
    from ctxmem.store import open_store

    return open_store(db_path)


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def open_existing_store(db_path: str) -> Any:
    """The store at ``db_path`` for a command that only reads it: a path that holds no
    store is an error naming it (a read never creates a directory or a database file).
    URLs (``postgresql://…``) open through :func:`ctxmem.store.open_store`."""
    from ctxmem.store import open_existing

    return open_existing(db_path)


def resolve_session_id(store: Any, text: str) -> str:
    """A session id from what a user typed: the id, a unique prefix of it, or ``latest``
    (the most recently created session). Ambiguity and misses are one clear error."""
    from ctxmem.errors import InputError, SessionNotFoundError

    if not text.strip():
        # a prefix of every id: a script with an unset $ID would act on whatever session is there
        raise InputError("empty session id: give an id, a unique prefix of one, or latest "
                         "(ctxmem sessions list shows them)", field="session")
    infos = store.list_sessions()
    if text == "latest":
        if not infos:
            raise InputError("no sessions in this store yet, so no 'latest'", field="session")
        return str(max(infos, key=lambda s: (s.created_at, s.id)).id)
    ids = [s.id for s in infos]
    if text in ids:
        return text
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(sorted(matches)[:5]) + (" …" if len(matches) > 5 else "")
        raise InputError(f"{text!r} is the prefix of {len(matches)} sessions ({shown}): type more of the id",
                         field="session")
    raise SessionNotFoundError(text)
