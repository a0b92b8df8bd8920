"""A real git repository over the workspace, with deterministic commit shas.

The repository's ``GIT_DIR`` lives in the harness's private state (``.ctxmem/git``) with
the workspace root as its work tree, so the agent's file tools never see a ``.git`` folder
and cannot edit history behind the tools' back. Every git call runs with a scrubbed
environment: no system or global config, a fixed author and committer, and a commit date
derived from the commit's position in history (``2025-01-01T00:00:00Z`` + N minutes). The
same sequence of edits and commits therefore yields the same shas, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ctxmem.workloads.kernel.workspace import STATE_DIR, Workspace

AUTHOR = "ctxmem agent"
EMAIL = "agent@ctxmem.invalid"
EPOCH = 1735689600  # 2025-01-01T00:00:00Z
MAX_OUTPUT_CHARS = 20_000


class GitError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class GitResult:
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class GitRepo:
    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self.git_dir = workspace.state_dir / "git"
        if not (self.git_dir / "HEAD").exists():
            self._init()

    def _env(self, commit_index: int = 0) -> dict[str, str]:
        date = f"@{EPOCH + 60 * commit_index} +0000"
        home = self.workspace.state_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "GIT_DIR": str(self.git_dir),
            "GIT_WORK_TREE": str(self.workspace.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": AUTHOR,
            "GIT_AUTHOR_EMAIL": EMAIL,
            "GIT_COMMITTER_NAME": AUTHOR,
            "GIT_COMMITTER_EMAIL": EMAIL,
            "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_DATE": date,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "TZ": "UTC",
        }

    def git(self, *args: str, commit_index: int = 0) -> GitResult:
        try:
            proc = subprocess.run(
                ["git", "-c", "core.pager=cat", "-c", "color.ui=false", "-c", "core.quotepath=false",
                 "-c", "advice.detachedHead=false", *args],
                cwd=self.workspace.root, env=self._env(commit_index), capture_output=True,
                text=True, timeout=60, check=False,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed (apt-get install git)") from exc
        out = (proc.stdout + proc.stderr).rstrip("\n")
        if len(out) > MAX_OUTPUT_CHARS:
            out = out[:MAX_OUTPUT_CHARS] + f"\n… output truncated at {MAX_OUTPUT_CHARS} characters"
        return GitResult(proc.returncode, out)

    def _init(self) -> None:
        self.git_dir.parent.mkdir(parents=True, exist_ok=True)
        for args in (("init", "-q", "-b", "main"),
                     ("config", "core.fileMode", "false"),
                     ("config", "core.autocrlf", "false"),
                     ("config", "commit.gpgsign", "false"),
                     ("config", "gc.auto", "0")):
            result = self.git(*args)
            if not result.ok:
                raise GitError(f"git {' '.join(args)} failed: {result.output}")
        exclude = self.git_dir / "info" / "exclude"
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text(f"/{STATE_DIR}/\n__pycache__/\n")
        self.commit("initial workspace: baseline kernel, reference, HARNESS.md")

    def commit_count(self) -> int:
        result = self.git("rev-list", "--count", "HEAD")
        return int(result.output) if result.ok and result.output.isdigit() else 0

    def head(self) -> str | None:
        result = self.git("rev-parse", "HEAD")
        return result.output if result.ok else None

    def commit(self, message: str) -> GitResult:
        add = self.git("add", "-A", ".")
        if not add.ok:
            return add
        return self.git("commit", "-q", "--allow-empty-message", "-m", message,
                        commit_index=self.commit_count())

    def resolve(self, rev: str) -> str | None:
        result = self.git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        return result.output if result.ok else None

    def subject(self, sha: str) -> str:
        return self.git("log", "-1", "--format=%s", sha).output

    def workspace_path(self, path: str) -> Path:
        return self.workspace.resolve(path)
