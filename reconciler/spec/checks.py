"""Semantic checks of loaded specs: the rules a schema cannot express.

Each rule is a small function that yields Diagnostics located at the offending field. ``check`` runs
them all (and the local CSV checks) and never touches the network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from reconciler.errors import Diagnostic
from reconciler.linq import query_columns
from reconciler.settings import endpoint_problem
from reconciler.sources import KINDS, suggest
from reconciler.spec.csvcheck import ScanProgress, check_csv_file
from reconciler.spec.loader import ENV_RE, LoadedDomain, LoadedLookup, LoadResult
from reconciler.spec.model import (
    SECRET_FIELDS,
    SOURCE_KINDS,
    Column,
    Contribution,
    FileProvider,
    Key,
    Recipe,
)

Rule = Callable[[LoadedLookup], Iterator[Diagnostic]]


def _source_path(lookup: LoadedLookup) -> tuple[str, ...]:
    kind = lookup.model.spec.source_kind
    return ("spec", kind) if kind else ("spec",)


def _set_field(block: Any, name: str) -> Any:
    """A field of a source block, or None when its kind has no such field (or there is no block).
    Read from the model's fields: ``getattr`` on a pydantic model that lacks the name raises
    inside pydantic first (3 µs, several times a lookup in a big plan's checks)."""
    return getattr(block, "__dict__", {}).get(name)


def columns_of(lookup: LoadedLookup) -> list[Column] | None:
    """The declared columns, when the source declares them (CSV sources)."""
    return cast("list[Column] | None", _set_field(inner_source(lookup), "columns"))


def inner_source(lookup: LoadedLookup) -> Any:
    """The block that holds columns, query and fileProvider (``recipe`` nests them in ``source``)."""
    block = lookup.model.spec.source
    return getattr(block, "source", block) if isinstance(block, Recipe) else block


def inner_path(lookup: LoadedLookup) -> tuple[str, ...]:
    """The location of ``inner_source`` in the document."""
    path = _source_path(lookup)
    return (*path, "source") if isinstance(lookup.model.spec.source, Recipe) else path


def query_of(lookup: LoadedLookup) -> str | None:
    """The LINQ query of a query lookup (or a recipe with a query source), else None."""
    return cast("str | None", _set_field(inner_source(lookup), "query"))


def _key(lookup: LoadedLookup) -> tuple[Key | None, tuple[str, ...]]:
    spec = lookup.model.spec
    kind = spec.source_kind
    if kind is None:
        return None, ()
    return _set_field(spec.source, "key"), ("spec", kind, "key")


# --- the rules ----------------------------------------------------------------------------------


def rule_one_source(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """Exactly one source block (none is fine for ``state: absent``)."""
    spec = lookup.model.spec
    kinds = spec.sources()
    if len(kinds) > 1:
        yield lookup.diagnostic(
            ("spec", kinds[1]),
            f"more than one source block: {', '.join(kinds)}",
            hint="keep exactly one of " + ", ".join(SOURCE_KINDS),
        )
    elif not kinds and spec.state == "present":
        yield lookup.diagnostic(
            ("spec",), "no source block", hint="add one of " + ", ".join(SOURCE_KINDS)
        )


def rule_protect_absent(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """``protect: true`` with ``state: absent`` contradicts itself."""
    spec = lookup.model.spec
    if spec.protect and spec.state == "absent":
        yield lookup.diagnostic(
            ("spec", "protect"),
            "a protected lookup cannot have state: absent",
            hint="set protect: false to allow deleting it",
        )


def rule_source_block(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """The rules of the lookup's source kind (each kind's ``check``, in ``reconciler.sources``),
    placed at their field of this document."""
    kind = lookup.model.spec.source_kind
    if kind is None:
        return
    for finding in KINDS[kind].check(getattr(lookup.model.spec, kind)):
        yield lookup.diagnostic(("spec", kind, *finding.loc), finding.message, hint=finding.hint)


def rule_unique_columns(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """Column names are unique."""
    columns = columns_of(lookup) or []
    seen: set[str] = set()
    base = (*inner_path(lookup), "columns")
    for i, column in enumerate(columns):
        if column.name in seen:
            yield lookup.diagnostic(
                (*base, i, "name"), f"duplicate column {column.name!r}", hint="rename one of them"
            )
        seen.add(column.name)


def rule_key(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """``key.column``/``key.columns`` name real columns; ``column`` and ``col-hash`` need them."""
    key, at = _key(lookup)
    if key is None:
        return
    columns = columns_of(lookup)
    names = [c.name for c in columns] if columns is not None else None
    if names is None:
        query = query_of(lookup)
        names = query_columns(query) if query else None
    if key.type == "column":
        if not key.column:
            yield lookup.diagnostic(
                (*at, "type"), "key type 'column' needs 'column'", hint="add column: <name>"
            )
        elif names is not None and key.column not in names:
            yield lookup.diagnostic(
                (*at, "column"), f"{key.column!r} is not a column", hint=suggest(key.column, names)
            )
    if key.type == "col-hash":
        if not key.columns:
            yield lookup.diagnostic(
                (*at, "type"),
                "key type 'col-hash' needs 'columns'",
                hint="add columns: [a, b]",
            )
        elif names is not None:
            for i, name in enumerate(key.columns):
                if name not in names:
                    yield lookup.diagnostic(
                        (*at, "columns", i), f"{name!r} is not a column", hint=suggest(name, names)
                    )
    if key.type not in ("column",) and key.column is not None:
        yield lookup.diagnostic(
            (*at, "column"),
            f"'column' is only used with key type 'column' (type is {key.type!r})",
            hint="remove it, or set type: column",
        )


def rule_contribution(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """``contribution.type: col`` needs ``name``, a STRING column when columns are known."""
    block: Contribution | None = _set_field(lookup.model.spec.source, "contribution")
    at = (*_source_path(lookup), "contribution")
    if block is not None:
        if block.type == "col" and not block.name:
            yield lookup.diagnostic(
                (*at, "type"),
                "contribution type 'col' needs 'name'",
                hint="name the STRING column that holds add/delete",
            )
        elif block.type == "col" and block.name:
            columns = {c.name: c.type for c in columns_of(lookup) or []}
            if columns and block.name not in columns:
                yield lookup.diagnostic(
                    (*at, "name"),
                    f"{block.name!r} is not a column",
                    hint=suggest(block.name, list(columns)),
                )
            elif columns and columns[block.name] != "STRING":
                yield lookup.diagnostic(
                    (*at, "name"),
                    f"column {block.name!r} is {columns[block.name]}, not STRING",
                    hint="the contribution column holds the strings add/delete",
                )
        elif block.type != "col" and block.name is not None:
            yield lookup.diagnostic(
                (*at, "name"), "'name' only applies to contribution type 'col'", hint="remove it"
            )


def rule_secrets(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """A literal ``accessKey``/``secretKey`` is a warning: it belongs in ``${env:...}``."""
    providers: list[tuple[tuple[str, ...], FileProvider]] = []
    provider = _set_field(inner_source(lookup), "fileProvider")
    if isinstance(provider, FileProvider):
        providers.append(((*inner_path(lookup), "fileProvider"), provider))
    for at, provider in providers:
        for name in sorted(SECRET_FIELDS):
            value = getattr(provider, name)
            if value is not None and not ENV_RE.fullmatch(value.strip()):
                yield lookup.diagnostic(
                    (*at, name),
                    "literal secret in a spec file",
                    hint=f"write {name}: ${{env:S3_{name.upper()}}} and export it where apply runs",
                    severity="warning",
                )


_DEVO_NAME = re.compile(r"[A-Za-z0-9_]+")


def rule_devo_name(lookup: LoadedLookup) -> Iterator[Diagnostic]:
    """Devo's own upload path accepts lookup names of ``[A-Za-z0-9_]+`` only: warn about others."""
    name = lookup.model.metadata.name
    if not _DEVO_NAME.fullmatch(name):
        yield lookup.diagnostic(
            ("metadata", "name"),
            f"lookup name {name!r} has characters other than letters, digits and '_'",
            hint="Devo's own tooling accepts [A-Za-z0-9_]+ only; "
            f"e.g. {re.sub(r'[^A-Za-z0-9_]', '_', name)!r}",
            severity="warning",
        )


RULES: tuple[Rule, ...] = (
    rule_devo_name,
    rule_one_source,
    rule_protect_absent,
    rule_source_block,
    rule_unique_columns,
    rule_key,
    rule_contribution,
    rule_secrets,
)


def repository_root(spec: Path) -> Path:
    """The git work tree a spec file is in; else the working directory, or the spec's folder."""
    folder = spec.resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    cwd = Path.cwd().resolve()
    return cwd if folder.is_relative_to(cwd) else folder


def _outside_repository(spec: Path, csv: Path) -> Path | None:
    """The root ``csv`` escapes (after following symlinks), or None when it stays inside."""
    root = repository_root(spec)
    return None if csv.resolve().is_relative_to(root) else root


def check(
    result: LoadResult,
    *,
    csv: bool = True,
    allow_outside: bool = False,
    progress: ScanProgress | None = None,
) -> list[Diagnostic]:
    """Run every semantic rule (and, with ``csv``, the local CSV checks); return new diagnostics."""
    found: list[Diagnostic] = []
    seen: dict[str, LoadedLookup] = {}
    for lookup in result.lookups:
        for rule in RULES:
            found.extend(rule(lookup))
        first = seen.get(lookup.address)
        if first is not None:
            found.append(
                lookup.diagnostic(
                    ("metadata", "name"),
                    f"{lookup.address} is already defined at {first.path}:{first.line}",
                    hint="each domain/name may be described once",
                )
            )
        else:
            seen[lookup.address] = lookup
        path = lookup.csv_path()
        if path is not None and not allow_outside:
            outside = _outside_repository(lookup.path, path)
            if outside is not None:
                found.append(
                    lookup.diagnostic(
                        ("spec", "csv", "file"),
                        f"the CSV {path} is outside the spec repository ({outside})",
                        hint="keep lookup data in the repository beside its spec, or pass "
                        "--allow-outside if reading it from there is intended",
                    )
                )
                continue
        if csv and lookup.model.spec.state == "present" and path is not None:
            found.extend(check_csv_file(lookup, path, result.csv_scans, progress))
            patch = lookup.csv_patch
            outside = (
                _outside_repository(patch.overlay.path, patch.add)
                if patch is not None and patch.add is not None and not allow_outside
                else None
            )
            if outside is not None:
                found.append(
                    patch.overlay.diagnostic(
                        ("spec", "csv", "patch", "add"),
                        f"the CSV {patch.add} is outside the spec repository ({outside})",
                        hint="keep patch rows in the repository beside the overlay, or pass "
                        "--allow-outside if reading them from there is intended",
                    )
                )
            elif patch is not None and path.is_file():
                from reconciler.spec.fanout import patched_csv

                own, problems = patched_csv(lookup, path)
                found.extend(problems)
                if own is not None:
                    lookup.patched_csv = own
                    found.extend(check_csv_file(lookup, own, result.csv_scans, progress))
    domains: dict[str, str] = {}
    for domain in result.domains:
        name = domain.model.metadata.name
        if name in domains:
            found.append(
                domain.diagnostic(
                    ("metadata", "name"),
                    f"domain {name!r} is already described at {domains[name]}",
                    hint="one Domain document per domain",
                )
            )
        domains.setdefault(name, f"{domain.path}:{domain.line}")
        found.extend(rule_domain_endpoint(domain))
    return found


def rule_domain_endpoint(domain: LoadedDomain) -> Iterator[Diagnostic]:
    """A Domain's own ``url`` is a usable endpoint and comes with its own ``auth``: a spec (from a
    pull request, say) must never be able to send the run's credential to a host it chooses."""
    spec = domain.model.spec
    if spec.url is None:
        return
    problem = endpoint_problem(spec.url)
    if problem is not None:
        yield domain.diagnostic(("spec", "url"), problem[0], hint=problem[1])
    if spec.auth is None:
        yield domain.diagnostic(
            ("spec", "url"),
            "a Domain with its own url must name its own credential in spec.auth",
            hint="add auth: {tokenEnv: NAME} (or apiKeyEnv/apiSecretEnv): the run's credential "
            "goes only to the run's endpoint",
        )
