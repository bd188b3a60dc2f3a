"""What git is asked about the repository holding the specs, and when it is not asked at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler import gitrepo
from tests.support import git


def _count_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    started: list[list[str]] = []
    real = subprocess.run

    def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        started.append(command)
        return real(command, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(subprocess, "run", run)
    return started


def test_outside_a_repository_git_is_not_started_for_repository_questions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GIT_DIR", raising=False)
    started = _count_processes(monkeypatch)
    assert gitrepo.head_commit(tmp_path) is None and gitrepo.toplevel(tmp_path) is None
    assert not gitrepo.is_shallow(tmp_path)
    assert started == []
    gitrepo.user_email(tmp_path)  # global config answers outside a repository too
    assert len(started) == 1


def test_inside_a_repository_and_a_worktree_git_answers(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "specs").mkdir(parents=True)
    git(repo, "init", "-q")
    (repo / "specs" / "a.yaml").write_text("x: 1\n")
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-q", "-m", "one")
    head = gitrepo.head_commit(repo / "specs")
    assert head and len(head) == 40
    worktree = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(worktree))
    assert (worktree / ".git").is_file()  # a worktree's .git is a file naming the repository
    assert gitrepo.head_commit(worktree / "specs") == head


def test_git_dir_in_the_environment_is_always_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(
        repo,
        "-c",
        "user.email=a@b",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    assert gitrepo.head_commit(elsewhere) is not None
