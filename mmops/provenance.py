"""Which code produced a figure: the git commit of the project, and whether the work tree differed from it.

Training runs record the commit; pages of figures (docs/results.md, docs/benchmarks.md) state it, so that
every figure can be traced to the code that measured it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(root: Path) -> str | None:
    """HEAD's commit id, or None outside a git checkout."""
    return _git(root, "rev-parse", "HEAD") or None


def source_state(root: Path) -> str:
    """`commit 1a2b3c4d5e`, with `+ uncommitted changes to tracked files` when the work tree differs from it."""
    commit = git_commit(root)
    if commit is None:
        return "no git commit (not a checkout)"
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    return f"commit {commit[:10]}" + (" + uncommitted changes to tracked files" if dirty else "")
