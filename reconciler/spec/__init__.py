"""The spec language: models, loader and semantic checks of ``Lookup`` and ``Domain`` documents."""

from reconciler.spec.loader import LoadedDomain, LoadedLookup, LoadResult, load_specs

__all__ = ["LoadResult", "LoadedDomain", "LoadedLookup", "load_specs", "validate_paths"]


def validate_paths(
    paths: list[str], *, csv: bool = True, allow_outside: bool = False
) -> LoadResult:
    """Load and check every spec under ``paths``; the result holds all diagnostics of the run.

    ``allow_outside``: accept ``csv.file`` paths that leave the spec repository.
    """
    from reconciler.spec.checks import check

    result = load_specs(paths)
    result.diagnostics.extend(check(result, csv=csv, allow_outside=allow_outside))
    return result
