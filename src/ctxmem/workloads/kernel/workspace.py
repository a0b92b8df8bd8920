"""The agent's workspace: a folder with the kernel, the reference and the rules.

Layout of a fresh workspace::

    kernel.py        the baseline Triton kernel (the agent edits this)
    reference.py     the PyTorch reference in KernelBench form (a copy, for reading; the
                     checker always uses the pristine one shipped with ctxmem)
    HARNESS.md       the rules of the task
    .ctxmem/         the harness's private state: result cache, snapshots, sandbox HOME/TMP

Every path a tool receives goes through :meth:`Workspace.resolve`, which refuses absolute
paths, ``..`` components, the private ``.ctxmem`` folder, and symlinks whose target lies
outside the workspace. Refusals are :class:`PathEscapeError` with a message the agent can
act on.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path, PurePosixPath

from ctxmem.errors import InputError

KERNEL_FILE = "kernel.py"
REFERENCE_FILE = "reference.py"
HARNESS_FILE = "HARNESS.md"
STATE_DIR = ".ctxmem"

# asset name -> name in the workspace
_SEED_FILES = {
    "extend_attention.py": KERNEL_FILE,
    "reference.py": REFERENCE_FILE,
    "HARNESS.md": HARNESS_FILE,
}


class WorkspaceError(InputError):
    """A workspace operation failed (missing file, ambiguous edit, …)."""


class PathEscapeError(WorkspaceError):
    """A path points outside the workspace (or into its private state)."""

    def __init__(self, path: str, reason: str):
        self.path = path
        super().__init__(f"path {path!r} refused: {reason}. Use a path relative to the workspace root.")


def asset_path(name: str) -> Path:
    """Filesystem path of a file shipped in ``ctxmem/workloads/kernel/assets``."""
    path = Path(str(resources.files("ctxmem.workloads.kernel").joinpath("assets", name)))
    if not path.is_file():
        raise WorkspaceError(f"missing asset {name!r} in the ctxmem installation ({path})")
    return path


class Workspace:
    """A workspace folder. ``Workspace.create`` seeds one; ``Workspace(root)`` opens one."""

    def __init__(self, root: str | Path):
        root = Path(root)
        if not root.is_dir():
            raise WorkspaceError(f"workspace {str(root)!r} does not exist; create it with Workspace.create")
        self.root = root.resolve()

    @classmethod
    def create(cls, root: str | Path, *, exist_ok: bool = False) -> Workspace:
        """Create ``root`` and seed it with the kernel, the reference and HARNESS.md."""
        root = Path(root)
        if root.exists() and any(root.iterdir()) and not exist_ok:
            raise WorkspaceError(f"workspace {str(root)!r} already exists and is not empty")
        root.mkdir(parents=True, exist_ok=True)
        for asset, name in _SEED_FILES.items():
            target = root / name
            if not target.exists():
                shutil.copyfile(asset_path(asset), target)
        ws = cls(root)
        ws.state_dir.mkdir(exist_ok=True)
        return ws

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    def resolve(self, path: str, *, must_exist: bool = False) -> Path:
        """The absolute path of ``path`` (relative to the root), or :class:`PathEscapeError`."""
        if not isinstance(path, str) or not path.strip():
            raise PathEscapeError(str(path), "empty path")
        if "\x00" in path:
            raise PathEscapeError(path, "NUL byte in path")
        pure = PurePosixPath(path)
        if pure.is_absolute() or path.startswith("~"):
            raise PathEscapeError(path, "absolute paths are not allowed")
        if ".." in pure.parts:
            raise PathEscapeError(path, "'..' is not allowed")
        parts = [p for p in pure.parts if p != "."]
        if parts and parts[0] == STATE_DIR:
            raise PathEscapeError(path, f"{STATE_DIR}/ is the harness's private state")
        candidate = self.root.joinpath(*parts)
        # resolve() follows every symlink on the way, so a link anywhere in the path that
        # leads outside shows up here.
        real = candidate.resolve()
        if real != self.root and not real.is_relative_to(self.root):
            raise PathEscapeError(path, "it is a symlink (or goes through one) that leaves the workspace")
        if real.is_relative_to(self.state_dir):
            raise PathEscapeError(path, f"it leads into {STATE_DIR}/, the harness's private state")
        if must_exist and not real.exists():
            raise WorkspaceError(f"no such file: {path}")
        return candidate

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()
