from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctxmem.messages import tool_to_anthropic, tool_to_openai
from ctxmem.workloads.kernel import PathEscapeError, Workspace, WorkspaceError
from ctxmem.workloads.kernel.tools import FILE_TOOL_SCHEMAS, FileTools, tool_specs


@pytest.fixture
def tools(workspace: Workspace) -> FileTools:
    return FileTools(workspace)


def test_new_workspace_holds_kernel_reference_and_rules(workspace: Workspace, tools: FileTools) -> None:
    listing = tools.call("list_files", {}).text
    names = [line.split()[0] for line in listing.splitlines()]
    assert names == ["HARNESS.md", "kernel.py", "reference.py"]  # .ctxmem is hidden
    assert "def launch" not in (workspace.root / "reference.py").read_text()
    assert "launch = extend_attention" in (workspace.root / "kernel.py").read_text()
    with pytest.raises(WorkspaceError, match="not empty"):
        Workspace.create(workspace.root)


@pytest.mark.parametrize("path", ["../x", "a/../../x", "..", "sub/../.."])
def test_dotdot_is_refused(workspace: Workspace, tools: FileTools, path: str) -> None:
    with pytest.raises(PathEscapeError, match=r"'\.\.' is not allowed"):
        workspace.resolve(path)
    for name, args in [("read_file", {"path": path}), ("write_file", {"path": path, "content": "x"}),
                       ("edit_file", {"path": path, "old": "a", "new": "b"}), ("list_files", {"path": path})]:
        out = tools.call(name, args)
        assert out.is_error and "refused" in out.text


@pytest.mark.parametrize("path", ["/etc/passwd", "/tmp/x", "~/x"])
def test_absolute_paths_are_refused(tools: FileTools, path: str) -> None:
    out = tools.call("read_file", {"path": path})
    assert out.is_error
    assert "absolute paths are not allowed" in out.text
    assert tools.call("write_file", {"path": path, "content": "x"}).is_error


def test_escaping_symlinks_are_refused(workspace: Workspace, tools: FileTools, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside / "secret.txt", workspace.root / "link.txt")
    os.symlink(outside, workspace.root / "linkdir")
    os.symlink(tmp_path / "missing.txt", workspace.root / "dangling.txt")
    for path in ("link.txt", "linkdir/secret.txt", "linkdir", "dangling.txt"):
        read = tools.call("read_file", {"path": path})
        assert read.is_error and "symlink" in read.text, path
        assert "secret" not in read.text.replace("secret.txt", "")
    assert tools.call("write_file", {"path": "linkdir/new.txt", "content": "x"}).is_error
    assert tools.call("write_file", {"path": "dangling.txt", "content": "x"}).is_error
    assert tools.call("edit_file", {"path": "link.txt", "old": "secret", "new": "gone"}).is_error
    assert (outside / "secret.txt").read_text() == "secret"
    assert not (outside / "new.txt").exists() and not (tmp_path / "missing.txt").exists()
    # No link is followed, even one that stays inside: every component is opened O_NOFOLLOW.
    os.symlink(workspace.root / "HARNESS.md", workspace.root / "rules.md")
    assert tools.call("read_file", {"path": "rules.md"}).is_error


def test_private_state_is_out_of_reach(workspace: Workspace, tools: FileTools) -> None:
    (workspace.state_dir / "results.sqlite").write_text("")
    for path in (".ctxmem/results.sqlite", "./.ctxmem/x"):
        out = tools.call("write_file", {"path": path, "content": "x"})
        assert out.is_error and "private state" in out.text
    os.symlink(workspace.state_dir, workspace.root / "state")
    assert tools.call("read_file", {"path": "state/results.sqlite"}).is_error


def test_read_with_line_numbers_and_ranges(tools: FileTools) -> None:
    whole = tools.call("read_file", {"path": "kernel.py"}).text
    assert whole.splitlines()[0].startswith("kernel.py · lines 1-")
    part = tools.call("read_file", {"path": "kernel.py", "start_line": 3, "end_line": 5}).text
    assert part.splitlines()[0].startswith("kernel.py · lines 3-5 of ")
    lines = part.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["3", "4", "5"]
    assert lines[4].startswith("… ") and lines[4].endswith("more lines")
    assert tools.call("read_file", {"path": "kernel.py", "start_line": 100000}).is_error
    assert tools.call("read_file", {"path": "nope.py"}).text == "error: no such file: nope.py"


def test_edit_replaces_exactly_one_occurrence(workspace: Workspace, tools: FileTools) -> None:
    out = tools.call("edit_file", {"path": "kernel.py", "old": "BLOCK_M: int = 32,", "new": "BLOCK_M: int = 64,"})
    assert not out.is_error and out.text.startswith("edited kernel.py: replaced 1 line(s) at line ")
    assert "BLOCK_M: int = 64," in (workspace.root / "kernel.py").read_text()
    missing = tools.call("edit_file", {"path": "kernel.py", "old": "no such text", "new": ""})
    assert missing.is_error and "not found" in missing.text
    ambiguous = tools.call("edit_file", {"path": "kernel.py", "old": "other=0.0", "new": "other=1.0"})
    assert ambiguous.is_error and "occurs" in ambiguous.text and "times" in ambiguous.text
    assert tools.call("edit_file", {"path": "kernel.py", "old": "", "new": "x"}).is_error


def test_write_creates_folders_inside(workspace: Workspace, tools: FileTools) -> None:
    out = tools.call("write_file", {"path": "variants/v1.py", "content": "a\nb\n"})
    assert out.text.startswith("created variants/v1.py: 2 lines, sha ")
    assert tools.call("write_file", {"path": "variants/v1.py", "content": "c\n"}).text.startswith("overwrote")
    assert "variants/v1.py" in tools.call("list_files", {}).text
    assert (workspace.root / "variants" / "v1.py").read_text() == "c\n"


def test_arguments_are_validated_against_the_schema(tools: FileTools) -> None:
    assert "missing required argument(s): path" in tools.call("read_file", {}).text
    assert "unknown argument(s): mode" in tools.call("read_file", {"path": "kernel.py", "mode": "r"}).text
    assert "must be a integer" in tools.call("read_file", {"path": "kernel.py", "start_line": "3"}).text
    assert "must be >= 1" in tools.call("read_file", {"path": "kernel.py", "start_line": 0}).text
    assert "unknown tool 'rm'" in tools.call("rm", {"path": "kernel.py"}).text


def test_schemas_serve_both_apis() -> None:
    for schema in FILE_TOOL_SCHEMAS:
        assert set(schema) == {"name", "description", "input_schema"}
        assert schema["input_schema"]["type"] == "object"
    specs = tool_specs()
    assert [tool_to_anthropic(s) for s in specs] == [dict(s) for s in FILE_TOOL_SCHEMAS]
    openai = [tool_to_openai(s) for s in specs]
    assert openai[1]["type"] == "function"
    assert openai[1]["function"]["name"] == "read_file"
    assert openai[1]["function"]["parameters"]["required"] == ["path"]
