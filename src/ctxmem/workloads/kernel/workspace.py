"""The agent's workspace: a folder with the kernel, the reference and the rules.

Layout of a fresh workspace::

    kernel.py        the baseline Triton kernel (the agent edits this)
    reference.py     the PyTorch reference in KernelBench form (a copy, for reading; the
                     checker always uses the pristine one shipped with ctxmem)
    HARNESS.md       the rules of the task
    .ctxmem/         the harness's private state: result cache, snapshots, sandbox HOME/TMP

Every path a tool receives goes through the workspace, which refuses absolute paths,
``..`` components, the private ``.ctxmem`` folder, symbolic links anywhere on the path and
regular files with more than one link. The checks are not made on path strings: every
component is opened with ``O_NOFOLLOW`` relative to the descriptor of the folder before it
(``openat``), starting from the root, so the real parent of what is read or written is
always inside the workspace — a symlink (whatever its target, relative or absolute) stops
the walk, and a hard link to a file elsewhere is refused before a byte is read or written.
:meth:`Workspace.read_text` and :meth:`Workspace.write_text` read and write through the
descriptors of that walk; :meth:`Workspace.resolve` makes the same walk and returns the
path, for callers that only list or name files. Refusals are :class:`PathEscapeError` with
a message the agent can act on.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
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

    def _parts(self, path: str) -> list[str]:
        """Lexical checks; the path's components (empty for the root itself)."""
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
        return parts

    @contextmanager
    def _parent(self, path: str, *, create: bool = False) -> Iterator[tuple[int, str | None]]:
        """(descriptor of the real parent folder, last component) — None for the root."""
        parts = self._parts(path)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise WorkspaceError(f"no such file: {path}") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=fd)
                except OSError as exc:
                    where = "/".join(parts[: i + 1])
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ENOTDIR: look.
                        link = stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode)
                        kind = "a symlink" if link else "not a folder"
                        raise PathEscapeError(path, f"{where} is {kind}; the file tools do "
                                                    "not follow links") from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd, (parts[-1] if parts else None)
        finally:
            os.close(fd)

    def _check_final(self, path: str, st: os.stat_result) -> None:
        if stat.S_ISLNK(st.st_mode):
            raise PathEscapeError(path, "it is a symlink; the file tools do not follow links")
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise PathEscapeError(path, f"it has {st.st_nlink} hard links (one may lead outside "
                                        "the workspace); copy the file instead")

    def resolve(self, path: str, *, must_exist: bool = False) -> Path:
        """The absolute path of ``path`` (relative to the root), or :class:`PathEscapeError`.

        Walks every existing component with ``O_NOFOLLOW`` (see the module docstring).
        """
        parts = self._parts(path)
        try:
            with self._parent(path) as (fd, name):
                if name is not None:
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:
                        if must_exist:
                            raise WorkspaceError(f"no such file: {path}") from None
                    else:
                        self._check_final(path, st)
        except WorkspaceError as exc:
            if must_exist or isinstance(exc, PathEscapeError):
                raise
        return self.root.joinpath(*parts)

    def read_text(self, path: str) -> str:
        """The text of the regular file ``path``, read through the descriptor walk."""
        with self._parent(path) as (fd, name):
            if name is None:
                raise WorkspaceError(f"{path} is a folder; use list_files")
            try:
                ffd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                              dir_fd=fd)
            except FileNotFoundError:
                raise WorkspaceError(f"no such file: {path}") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PathEscapeError(path, "it is a symlink; the file tools do not "
                                                "follow links") from None
                raise
            with os.fdopen(ffd, "rb") as f:
                st = os.fstat(f.fileno())
                if stat.S_ISDIR(st.st_mode):
                    raise WorkspaceError(f"{path} is a folder; use list_files")
                if not stat.S_ISREG(st.st_mode):
                    raise PathEscapeError(path, "it is not a regular file")
                self._check_final(path, st)
                return f.read().decode()

    def write_text(self, path: str, content: str) -> bool:
        """Create or overwrite the regular file ``path``; whether it existed before."""
        data = content.encode()
        with self._parent(path, create=True) as (fd, name):
            if name is None:
                raise WorkspaceError(f"{path} is a folder")
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            existed = True
            try:
                try:
                    ffd = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    existed = False
                    ffd = os.open(name, flags | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise PathEscapeError(path, "it is a symlink; the file tools do not "
                                                "follow links") from None
                if exc.errno == errno.EISDIR:
                    raise WorkspaceError(f"{path} is a folder") from None
                raise
            with os.fdopen(ffd, "wb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise PathEscapeError(path, "it is not a regular file")
                # Checked before truncating: a hard link is refused with its target intact.
                self._check_final(path, st)
                f.truncate(0)
                f.write(data)
        return existed

    def relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()
