"""What git knows about the repository that holds a path: its checked-out commit, its top folder,
whether it is a shallow clone, who its user is.

Every question is asked as ``git -C <folder>``, so the answer is about the repository holding the
specs (or the CSV), wherever the command was started from. No git, no repository, or a git that
fails: the answer is None, and the caller says what that means.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path


def git(folder: Path, *args: str, timeout: float = 10) -> bytes | None:
    """The output of ``git -C folder ARGS``, or None when git is missing or fails."""
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _text(folder: Path, *args: str) -> str | None:
    out = git(folder, *args)
    return (out.decode(errors="replace").strip() or None) if out is not None else None


def folder_of(paths: Sequence[str | Path]) -> Path:
    """The folder git is asked in for spec ``paths``: the first one when it is a folder, else
    its parent; the current folder when there are none."""
    if not paths:
        return Path.cwd()
    path = Path(paths[0])
    return path if path.is_dir() else path.parent


def head_commit(folder: Path) -> str | None:
    """The commit checked out in the repository holding ``folder``."""
    return _text(folder, "rev-parse", "HEAD")


def toplevel(folder: Path) -> Path | None:
    """The top folder of the repository holding ``folder``."""
    top = _text(folder, "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def is_shallow(folder: Path) -> bool:
    """True when the repository holding ``folder`` is a shallow clone (CI's default checkout)."""
    return _text(folder, "rev-parse", "--is-shallow-repository") == "true"


def user_email(folder: Path) -> str | None:
    """git's ``user.email`` as the repository holding ``folder`` sees it (its own, else global)."""
    return _text(folder, "config", "user.email")


__all__ = ["folder_of", "git", "head_commit", "is_shallow", "toplevel", "user_email"]
