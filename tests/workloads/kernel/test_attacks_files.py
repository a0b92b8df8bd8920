"""Hostile files in the workspace: the file tools never read or write outside it.

Every component of a path is opened with O_NOFOLLOW relative to the folder before it, and a
regular file with more than one link is refused before a byte moves (workspace.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctxmem.workloads.kernel.tools import FileTools
from ctxmem.workloads.kernel.workspace import PathEscapeError, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace.create(tmp_path / "ws")


@pytest.fixture
def tools(ws: Workspace) -> FileTools:
    return FileTools(ws)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "victim.txt"
    path.parent.mkdir()
    path.write_text("original\n")
    return path


def test_write_file_through_a_hard_link_is_refused(ws: Workspace, tools: FileTools, victim: Path) -> None:
    os.link(victim, ws.root / "notes.txt")
    out = tools.call("write_file", {"path": "notes.txt", "content": "overwritten\n"})
    assert out.is_error and "2 hard links" in out.text, out.text
    edit = tools.call("edit_file", {"path": "notes.txt", "old": "original", "new": "changed"})
    assert edit.is_error and "hard links" in edit.text
    read = tools.call("read_file", {"path": "notes.txt"})
    assert read.is_error and "original" not in read.text
    assert victim.read_text() == "original\n"
    # A file of the workspace with one link is written normally.
    assert not tools.call("write_file", {"path": "mine.txt", "content": "x\n"}).is_error
    assert (ws.root / "mine.txt").read_text() == "x\n"


def test_hard_link_to_a_workspace_file_is_refused_too(ws: Workspace, tools: FileTools) -> None:
    # Even a link between two workspace files: the tools cannot tell where the other name is.
    os.link(ws.root / "kernel.py", ws.root / "alias.py")
    assert tools.call("write_file", {"path": "alias.py", "content": "x"}).is_error
    assert "launch" in (ws.root / "kernel.py").read_text()


def test_a_relative_symlink_resolves_against_its_own_folder(
    ws: Workspace, tools: FileTools, victim: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ws/sub/link -> ../../outside/victim.txt: outside when resolved from ws/sub (the link's
    # folder); a check resolving it from the current directory would see ws/.. instead.
    (ws.root / "sub").mkdir()
    os.symlink("../../outside/victim.txt", ws.root / "sub" / "link.txt")
    deep = ws.root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)  # from here, ../../outside/victim.txt is inside the workspace
    (ws.root / "a" / "outside").mkdir()
    (ws.root / "a" / "outside" / "victim.txt").write_text("decoy")
    for name, args in [("write_file", {"path": "sub/link.txt", "content": "pwned\n"}),
                       ("edit_file", {"path": "sub/link.txt", "old": "original", "new": "pwned"}),
                       ("read_file", {"path": "sub/link.txt"})]:
        out = tools.call(name, args)
        assert out.is_error and "symlink" in out.text, (name, out.text)
    assert victim.read_text() == "original\n"
    assert (ws.root / "a" / "outside" / "victim.txt").read_text() == "decoy"


def test_a_symlinked_folder_on_the_path_is_refused(ws: Workspace, tools: FileTools, victim: Path) -> None:
    os.symlink(victim.parent, ws.root / "out")
    out = tools.call("write_file", {"path": "out/new.txt", "content": "x"})
    assert out.is_error and "out is a symlink" in out.text
    assert not (victim.parent / "new.txt").exists()
    with pytest.raises(PathEscapeError, match="symlink"):
        ws.resolve("out/victim.txt")


def test_a_link_swapped_in_after_resolve_is_still_not_followed(ws: Workspace, victim: Path) -> None:
    # resolve() answered for a regular file; the file is then replaced by a symlink. The
    # write goes through its own O_NOFOLLOW walk, not the path resolve() returned.
    target = ws.resolve("kernel.py", must_exist=True)
    target.unlink()
    os.symlink(victim, target)
    with pytest.raises(PathEscapeError, match="symlink"):
        ws.write_text("kernel.py", "pwned")
    assert victim.read_text() == "original\n"


@pytest.mark.parametrize("path", [".ctxmem/results.sqlite", "./.ctxmem/x", ".ctxmem"])
def test_private_state_is_refused(tools: FileTools, path: str) -> None:
    out = tools.call("write_file", {"path": path, "content": "x"})
    assert out.is_error and "private state" in out.text
    assert tools.call("read_file", {"path": path}).is_error
