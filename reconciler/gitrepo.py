"""What git knows about the repository that holds a path: its checked-out commit, its top folder,
whether it is a shallow clone, who its user is.

Every question is asked as ``git -C <folder>``, so the answer is about the repository holding the
specs (or the CSV), wherever the command was started from. No git, no repository, or a git that
fails: the answer is None, and the caller says what that means.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path


def git(folder: Path, *args: str, timeout: float = 10, repository: bool = True) -> bytes | None:
    """The output of ``git -C folder ARGS``, or None when git is missing or fails.

    A question about the repository (``repository``) outside any repository is answered None
    without starting git: a plan outside git asked it several times per run, a process each."""
    if repository and not _may_be_in_repository(folder):
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _may_be_in_repository(folder: Path) -> bool:
    """False only when git would find no repository for ``folder``: no ``.git`` (a folder, or
    the file of a worktree or submodule) in it or above it, and no ``GIT_DIR`` naming one."""
    if os.environ.get("GIT_DIR"):
        return True
    try:
        here = folder.resolve()
    except OSError:
        return True  # git decides
    return any((d / ".git").exists() for d in (here, *here.parents))


def _text(folder: Path, *args: str, repository: bool = True) -> str | None:
    out = git(folder, *args, repository=repository)
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
    return _text(folder, "config", "user.email", repository=False)  # global config too


def file_at(commit: str, path: Path, folder: Path) -> tuple[Path, str] | None:
    """``path`` as it was at ``commit``, streamed into ``folder``: (the copy, its sha256), or None."""
    top = toplevel(path.parent)
    if top is None:
        return None
    try:
        relative = path.resolve().relative_to(top.resolve())
    except ValueError:
        return None
    copy = folder / f"old-{path.name}"
    digest = hashlib.sha256()  # taken on the way, not by reading the copy again
    try:
        with (
            subprocess.Popen(
                ["git", "-C", str(path.parent), "show", f"{commit}:{relative.as_posix()}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            ) as git,
            copy.open("wb") as out,
        ):
            if not (git.stdout is not None):
                raise RuntimeError("invariant broken: git.stdout is not None")
            while chunk := git.stdout.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
            code = git.wait(timeout=600)
    except (OSError, subprocess.SubprocessError):
        return None
    if code != 0:
        return None
    return copy, digest.hexdigest()


__all__ = ["file_at", "folder_of", "git", "head_commit", "is_shallow", "toplevel", "user_email"]
