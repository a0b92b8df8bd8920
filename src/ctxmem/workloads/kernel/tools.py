"""File tools of the kernel workload: list, read, edit, write — confined to the workspace.

Each tool is a plain JSON-schema dict (``name``, ``description``, ``input_schema``), the
shape of an Anthropic tool definition; :func:`tool_specs` gives them as
:class:`ctxmem.messages.ToolSpec`, which converts to the OpenAI ``function`` shape with
:func:`ctxmem.messages.tool_to_openai`. :meth:`FileTools.call` validates the arguments
against the schema, runs the tool and returns a :class:`ToolOutput`; every refusal (a path
outside the workspace, an ambiguous edit, a bad argument) comes back as an error result
with a message the agent can act on, never as an exception into the agent loop.

Outputs are deterministic (sorted listings, no timestamps), so the same session replays
byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ctxmem.errors import InputError
from ctxmem.messages import ToolSpec
from ctxmem.workloads.kernel.workspace import STATE_DIR, Workspace, WorkspaceError

MAX_READ_LINES = 2000
MAX_WRITE_BYTES = 1_000_000

_PATH = {
    "type": "string",
    "description": "Path relative to the workspace root, e.g. 'kernel.py'. "
    "Absolute paths and '..' are refused.",
}

FILE_TOOL_SCHEMAS: tuple[dict[str, Any], ...] = (
    {
        "name": "list_files",
        "description": "List the files of the workspace (or of one folder in it), with sizes.",
        "input_schema": {
            "type": "object",
            "properties": {"path": {**_PATH, "description": "Folder to list; default: the root."}},
            "additionalProperties": False,
        },
    },
    {
        "name": "read_file",
        "description": "Read a text file of the workspace, with line numbers. Optionally only "
        f"lines start_line..end_line (1-based, inclusive). At most {MAX_READ_LINES} lines.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "start_line": {"type": "integer", "minimum": 1, "description": "First line to show."},
                "end_line": {"type": "integer", "minimum": 1, "description": "Last line to show."},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    {
        "name": "edit_file",
        "description": "Replace one exact occurrence of `old` with `new` in a file. `old` must "
        "occur exactly once (include surrounding lines to make it unique).",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "old": {"type": "string", "description": "Exact text to replace (non-empty)."},
                "new": {"type": "string", "description": "Replacement text."},
            },
            "required": ["path", "old", "new"],
            "additionalProperties": False,
        },
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a text file in the workspace with `content`.",
        "input_schema": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "content": {"type": "string", "description": "The whole new content of the file."},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    },
)


def tool_specs(schemas: tuple[dict[str, Any], ...] = FILE_TOOL_SCHEMAS) -> list[ToolSpec]:
    return [ToolSpec(s["name"], s["description"], s["input_schema"]) for s in schemas]


@dataclass(frozen=True, slots=True)
class ToolOutput:
    text: str
    is_error: bool = False


class ToolArgumentError(InputError):
    """Arguments that do not match a tool's schema."""


_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "object": dict,
    "array": list,
}


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """Check the subset of JSON Schema the tools use: required, types, minimum, extras."""
    name = schema["name"]
    spec = schema["input_schema"]
    props: Mapping[str, Any] = spec.get("properties", {})
    if not isinstance(arguments, Mapping):
        raise ToolArgumentError(f"{name}: arguments must be a JSON object")
    missing = [k for k in spec.get("required", ()) if k not in arguments]
    if missing:
        raise ToolArgumentError(f"{name}: missing required argument(s): {', '.join(missing)}")
    if spec.get("additionalProperties") is False:
        extra = sorted(set(arguments) - set(props))
        if extra:
            raise ToolArgumentError(
                f"{name}: unknown argument(s): {', '.join(extra)}; expected {', '.join(props)}"
            )
    for key, value in arguments.items():
        prop = props.get(key, {})
        want = _JSON_TYPES.get(prop.get("type", ""))
        if want is None:
            continue
        if not isinstance(value, want) or (prop["type"] == "integer" and isinstance(value, bool)):
            raise ToolArgumentError(f"{name}: argument {key!r} must be a {prop['type']}")
        if "minimum" in prop and value < prop["minimum"]:
            raise ToolArgumentError(f"{name}: argument {key!r} must be >= {prop['minimum']}")


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB"


def _short_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


class FileTools:
    """The file tools over one workspace."""

    schemas = FILE_TOOL_SCHEMAS

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._handlers: dict[str, Callable[..., str]] = {
            "list_files": self.list_files,
            "read_file": self.read_file,
            "edit_file": self.edit_file,
            "write_file": self.write_file,
        }

    def call(self, name: str, arguments: Mapping[str, Any]) -> ToolOutput:
        """Run tool ``name``; refusals and bad arguments come back as error outputs."""
        schema = next((s for s in self.schemas if s["name"] == name), None)
        if schema is None:
            known = ", ".join(s["name"] for s in self.schemas)
            return ToolOutput(f"error: unknown tool {name!r}; known tools: {known}", is_error=True)
        try:
            validate_arguments(schema, arguments)
            return ToolOutput(self._handlers[name](**arguments))
        except (InputError, OSError, UnicodeDecodeError) as exc:
            return ToolOutput(f"error: {exc}", is_error=True)

    # -- the tools ------------------------------------------------------------------------

    def list_files(self, path: str = ".") -> str:
        folder = self.workspace.resolve(path, must_exist=True)
        if not folder.is_dir():
            raise WorkspaceError(f"{path} is a file, not a folder")
        rows = []
        for entry in sorted(folder.rglob("*")):
            rel = self.workspace.relative(entry)
            if rel.split("/")[0] == STATE_DIR or "__pycache__" in rel.split("/"):
                continue
            if entry.is_symlink():
                rows.append((rel, "-> " + str(entry.readlink())))
            elif entry.is_file():
                rows.append((rel, _size(entry.stat().st_size)))
            elif entry.is_dir():
                rows.append((rel + "/", ""))
        if not rows:
            return f"{path}: (empty)"
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{name:<{width}}  {size}".rstrip() for name, size in rows)

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        lines = self.workspace.read_text(path).splitlines()
        first = start_line or 1
        last = min(end_line or len(lines), len(lines), first + MAX_READ_LINES - 1)
        if lines and first > len(lines):
            raise WorkspaceError(f"{path} has {len(lines)} lines; start_line {first} is past the end")
        if end_line is not None and end_line < first:
            raise WorkspaceError(f"end_line {end_line} is before start_line {first}")
        width = len(str(last))
        body = "\n".join(f"{i:>{width}}  {lines[i - 1]}" for i in range(first, last + 1))
        header = f"{path} · lines {first}-{last} of {len(lines)}" if lines else f"{path} · empty"
        more = "" if last >= len(lines) else f"\n… {len(lines) - last} more lines"
        return f"{header}\n{body}{more}" if lines else header

    def edit_file(self, path: str, old: str, new: str) -> str:
        if not old:
            raise WorkspaceError("edit_file: `old` must not be empty; use write_file to replace a whole file")
        text = self.workspace.read_text(path)
        count = text.count(old)
        if count == 0:
            raise WorkspaceError(
                f"edit_file: the `old` text was not found in {path}; read the file and copy the "
                "exact lines (whitespace included)"
            )
        if count > 1:
            raise WorkspaceError(
                f"edit_file: the `old` text occurs {count} times in {path}; include more "
                "surrounding lines so it is unique"
            )
        at = text.index(old)
        first_line = text.count("\n", 0, at) + 1
        updated = text[:at] + new + text[at + len(old):]
        self.workspace.write_text(path, updated)
        old_n, new_n = old.count("\n") + 1, new.count("\n") + 1
        return (
            f"edited {path}: replaced {old_n} line(s) at line {first_line} with {new_n} line(s); "
            f"{path} is now {len(updated.splitlines())} lines, sha {_short_sha(updated)}"
        )

    def write_file(self, path: str, content: str) -> str:
        if len(content.encode()) > MAX_WRITE_BYTES:
            raise WorkspaceError(f"write_file: content over {MAX_WRITE_BYTES} bytes")
        existed = self.workspace.write_text(path, content)
        verb = "overwrote" if existed else "created"
        return f"{verb} {path}: {len(content.splitlines())} lines, sha {_short_sha(content)}"
