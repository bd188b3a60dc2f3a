"""Which spec files there are under the given paths: ``*.yaml``/``*.yml`` walked in a stable order,
and every reason a file would be missed (an unreadable folder, a broken link, a misspelt suffix, a
tracked file absent from the work tree) reported as an error, never skipped: a skipped file would
make its lookups look deleted to prune.

A spec file found in a folder that is a link to somewhere outside the spec repository (a pull
request can add ``specs/x.yaml -> ~/.config/...``) is an error and is not read: what it holds
would reach the output as lookup names, kinds and queries. ``--allow-outside`` reads it, as it
reads such a ``csv.file``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from reconciler.errors import Diagnostic
from reconciler.gitrepo import git

#: Spelling of a YAML suffix that is read; other casings (``.YAML``, ``.Yml``) are refused by name.
SPEC_SUFFIXES = (".yaml", ".yml")


def discover(
    paths: Iterable[str | Path], *, allow_outside: bool = False
) -> tuple[list[Path], list[Diagnostic]]:
    """The spec files under ``paths``: ``*.yaml``/``*.yml``, recursively, in a stable order.

    A file given by name is read wherever it is (the command line chose it); one found in a
    folder must stay in that folder's repository after following links, unless ``allow_outside``.
    """
    found: list[Path] = []
    problems: list[Diagnostic] = []
    for raw in paths:
        path = Path(raw)
        try:
            is_file, is_dir = path.is_file(), path.is_dir()
        except OSError as exc:  # a name too long, say: what pathlib does not take for "absent"
            problems.append(
                Diagnostic.for_file(
                    path,
                    f"cannot read it: {exc.strerror or exc}",
                    hint="pass spec files or folders (default: specs/)",
                )
            )
            continue
        if is_file:
            found.append(path)
        elif is_dir:
            files, unreadable = _walk_specs(path)
            if not allow_outside:
                files, outside = _inside_repository(path, files)
                unreadable.extend(outside)
            found.extend(files)
            problems.extend(
                Diagnostic.for_file(where, message, hint=hint)
                for where, message, hint in unreadable
            )
            problems.extend(_absent_from_work_tree(path))
        else:
            problems.append(
                Diagnostic.for_file(
                    path,
                    "no such file or directory",
                    hint="pass spec files or folders (default: specs/)",
                )
            )
    unique = list(dict.fromkeys(found))
    return unique, problems


def _absent_from_work_tree(folder: Path) -> list[Diagnostic]:
    """Spec files git tracks under ``folder`` that are not in the work tree (a sparse checkout,
    a file removed by hand): their lookups would look deleted to prune, so each is an error.

    No git, or a folder outside a repository: nothing to say. A deletion meant to stay is
    committed (or at least staged with ``git rm``), and then git no longer tracks the file.
    """
    listed = git(folder, "ls-files", "-z", "--", ".")
    if not listed:
        return []
    problems = []
    for name in listed.decode(errors="replace").split("\0"):
        parts = Path(name).parts
        if not name.lower().endswith(SPEC_SUFFIXES) or any(p.startswith(".") for p in parts):
            continue
        if not (folder / name).exists():
            problems.append(
                Diagnostic(
                    str(folder / name),
                    None,
                    None,
                    "",
                    "git tracks this spec file but it is not in the work tree "
                    "(a sparse checkout, or deleted by hand)",
                    hint="check out every spec file (git sparse-checkout disable), or "
                    "'git rm' it if its lookups are meant to go",
                )
            )
    return problems


_SKIPPED = "a spec file that is skipped would make its lookups look deleted to prune"


def repository_of(folder: Path) -> Path:
    """The repository a folder belongs to *as written*, links not followed (a ``specs`` that is a
    link elsewhere still belongs where it is written): the git work tree holding it, else the
    working directory when that holds it, else the folder itself; resolved."""
    here = Path(os.path.abspath(folder))
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate.resolve()
    cwd = Path.cwd()
    return (cwd if here.is_relative_to(cwd) else here).resolve()


def _inside_repository(
    folder: Path, files: list[Path]
) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """``files`` split into those inside ``folder``'s repository after following links, and a
    problem for each of the others (not read)."""
    root = repository_of(folder)
    inside, outside = [], []
    for path in files:
        real = path.resolve()
        if real.is_relative_to(root):
            inside.append(path)
        else:
            outside.append(
                (
                    path,
                    f"this spec file links to {real}, outside the spec repository ({root}): "
                    "it is not read",
                    "keep spec files in the repository, or pass --allow-outside if reading them "
                    "from there is intended",
                )
            )
    return inside, outside


def _walk_specs(root: Path) -> tuple[list[Path], list[tuple[Path, str, str]]]:
    """YAML files below ``root``, following symlinked folders once each; what cannot be read
    apart, as (path, message, hint): unreadable folders, broken links, misnamed spec files.

    Hidden names (``.reconciler/``, ``.git/``) are skipped. A symlink back into a folder already
    walked is not walked again, so a loop ends.
    """
    found: list[Path] = []
    unreadable: list[tuple[Path, str, str]] = []
    seen: set[str] = set()

    def failed(error: OSError) -> None:
        reason = error.strerror or str(error)
        unreadable.append(
            (
                Path(error.filename or root),
                f"cannot read this folder: {reason}",
                f"every folder under the spec paths must be readable: {_SKIPPED}",
            )
        )

    for folder, dirs, files in os.walk(root, onerror=failed, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []  # a symlink loop, or a folder linked twice: walked already
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            candidate = Path(folder) / name
            if name.startswith("."):
                continue
            try:  # is_file() only for a spec's name: a data folder may hold thousands of CSVs
                exists = candidate.exists()
                spec = exists and name.endswith(SPEC_SUFFIXES) and candidate.is_file()
            except OSError as exc:  # no permission to look at what a link points to, say
                unreadable.append(
                    (
                        candidate,
                        f"cannot read this file: {exc.strerror or type(exc).__name__}",
                        f"every file under the spec paths must be readable: {_SKIPPED}",
                    )
                )
                continue
            if not exists:  # a link to a folder or file that is not there
                unreadable.append(
                    (
                        candidate,
                        "cannot read this folder: a broken symlink",
                        f"every folder under the spec paths must be readable: {_SKIPPED}",
                    )
                )
            elif spec:
                found.append(candidate)
            elif name.lower().endswith(SPEC_SUFFIXES):
                suffix = candidate.suffix
                unreadable.append(
                    (
                        candidate,
                        f"spec files are named *.yaml or *.yml; {suffix!r} is not read",
                        f"rename it to {candidate.stem}{suffix.lower()}: {_SKIPPED}",
                    )
                )
    return sorted(found), unreadable


__all__ = ["SPEC_SUFFIXES", "discover", "repository_of"]
