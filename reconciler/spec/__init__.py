"""The spec language: models, loader and semantic checks of ``Lookup`` and ``Domain`` documents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from reconciler.heap import collector_paused
from reconciler.spec.csvcheck import ScanProgress
from reconciler.spec.discovery import discover
from reconciler.spec.fanout import expand_fan_out
from reconciler.spec.loader import LoadedDomain, LoadedLookup, LoadResult, load_file

__all__ = ["LoadResult", "LoadedDomain", "LoadedLookup", "load_specs", "validate_paths"]


def load_specs(
    paths: Iterable[str | Path],
    env: Mapping[str, str] | None = None,
    *,
    allow_outside: bool = False,
) -> LoadResult:
    """Load every spec document under ``paths``, fanned out to its domains with its Overlays
    (``allow_outside``: read spec files that link outside the spec repository too)."""
    files, problems = discover(paths, allow_outside=allow_outside)
    result = LoadResult(diagnostics=list(problems))
    for path in files:
        result.extend(load_file(path, env))
    expand_fan_out(result)
    return result


def validate_paths(
    paths: list[str],
    *,
    csv: bool = True,
    allow_outside: bool = False,
    progress: ScanProgress | None = None,
    strict: bool = False,
    ignore_references: Sequence[str] = (),
) -> LoadResult:
    """Load and check every spec under ``paths``; the result holds all diagnostics of the run.

    ``allow_outside``: accept spec files and ``csv.file`` paths that leave the spec repository
    (through links). ``progress``:
    what shows a long CSV scan (the command line's spinner). ``strict``: a use of a lookup no
    spec defines is an error, not a warning; ``ignore_references``: globs of lookups used but
    managed elsewhere (built-in ones), never reported.
    """
    from reconciler.spec.checks import check
    from reconciler.spec.references import check_references, find_uses

    with collector_paused():  # see reconciler.heap
        result = load_specs(paths, allow_outside=allow_outside)
    result.diagnostics.extend(
        check(result, csv=csv, allow_outside=allow_outside, progress=progress)
    )
    graph, problems = find_uses(result)
    result.references = graph
    result.diagnostics.extend(problems)
    result.diagnostics.extend(
        check_references(result, graph, strict=strict, ignore=ignore_references)
    )
    if (
        result.policies
        or any(lookup.model.spec.checks for lookup in result.lookups)
        or any(d.model.spec.checks for d in result.domains)
    ):
        from reconciler.spec.policies import compile_checks, compile_policies

        result.compiled_policies, problems = compile_policies(result)
        result.diagnostics.extend(problems)
        result.checks, problems = compile_checks(result)
        result.diagnostics.extend(problems)
    return result
