"""Who uses which lookup: the references found in query lookups' queries and in the files a Domain
names as users of its lookups (``spec.references``), and what validation says of them.

A reference resolves in the domain of what holds it: a query lookup's own domain, or the Domain
whose ``references`` globs found the file. JSON files are read string by string (a query inside a
JSON string has its quotes escaped), YAML files scalar by scalar; any other file as it is. Each
reference keeps its file and line, so every message about it can say where it is.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reconciler.errors import Diagnostic
from reconciler.linq import LookupRef, lookup_refs, query_columns
from reconciler.spec.checks import columns_of, inner_path, query_of, repository_root
from reconciler.spec.loader import LoadedDomain, LoadedLookup, LoadResult
from reconciler.spec.yamlnodes import compose_each

#: A references file larger than this is skipped with a warning (alerts and saved queries are small).
MAX_REFERENCE_FILE = 8 * 1024 * 1024

_JSON_STRING_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"')


@dataclass(frozen=True)
class Use:
    """One place a lookup is used: the domain it resolves in, the table and column it names (None
    when the query computes them), where it is, and the query lookup holding it (None: a file)."""

    domain: str
    table: str | None
    column: str | None
    path: str
    line: int
    column_no: int
    user: str | None
    snippet: str

    @property
    def address(self) -> str | None:
        """``domain/table`` of the lookup used, or None for a dynamic reference."""
        return f"{self.domain}/{self.table}" if self.table is not None else None

    @property
    def where(self) -> str:
        """``file:line`` as a message shows it (relative to the working folder when inside)."""
        return Diagnostic(self.path, self.line, None, "", "").location()

    def diagnostic(
        self, message: str, hint: str | None = None, severity: str = "error"
    ) -> Diagnostic:
        """A Diagnostic at this reference."""
        return Diagnostic(
            self.path, self.line, self.column_no, "", message, hint=hint, severity=severity
        )


@dataclass
class ReferenceGraph:
    """Every use found, and the files each domain's globs matched."""

    uses: list[Use] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)  # domain → reference files read
    _by: tuple[dict[str, list[Use]], dict[str, list[Use]], int] | None = field(
        default=None, repr=False, compare=False
    )

    def users_of(self, address: str) -> list[Use]:
        """The uses of the lookup at ``address``."""
        return self._index()[0].get(address, [])

    def reads(self, address: str) -> list[Use]:
        """The uses held by the query lookup at ``address`` (what it reads)."""
        return self._index()[1].get(address, [])

    def _index(self) -> tuple[dict[str, list[Use]], dict[str, list[Use]]]:
        """The uses by lookup used and by query lookup holding them (built once the uses are
        all found: a plan of 10,000 lookups asks for each)."""
        if self._by is None or self._by[2] != len(self.uses):
            used: dict[str, list[Use]] = {}
            held: dict[str, list[Use]] = {}
            for use in self.uses:
                if use.address is not None:
                    used.setdefault(use.address, []).append(use)
                if use.user is not None:
                    held.setdefault(use.user, []).append(use)
            self._by = (used, held, len(self.uses))
        return self._by[0], self._by[1]

    def edges(self) -> set[tuple[str, str]]:
        """(query lookup, lookup it reads) pairs."""
        return {(u.user, u.address) for u in self.uses if u.user and u.address}


def _where_query(lookup: LoadedLookup, query: str) -> tuple[int, int]:
    """The line a query's text starts on: the key's line, or the next for a block scalar."""
    line, _ = lookup.position((*inner_path(lookup), "query"))
    return (line + 1 if "\n" in query.rstrip("\n") else line), 1


def _uses_in_query(lookup: LoadedLookup) -> list[Use]:
    """The uses a query lookup's query holds (none for a lookup its spec deletes: it uses
    nothing any more; the order of its delete comes from what Devo shows of it)."""
    query = query_of(lookup)
    if not query or lookup.model.spec.state == "absent":
        return []
    first, _ = _where_query(lookup, query)
    return [
        Use(
            lookup.model.metadata.domain,
            ref.table,
            ref.column,
            str(lookup.path),
            first + ref.line - 1,
            ref.column_no,
            lookup.address,
            ref.snippet,
        )
        for ref in lookup_refs(query)
    ]


def _refs_in_file(text: str, suffix: str) -> Iterator[tuple[int, LookupRef]]:
    """(line in the file, reference) for every reference in a file's text."""
    if suffix == ".json":
        for match in _JSON_STRING_RE.finditer(text):
            try:
                value = json.loads(match.group())
            except ValueError:
                continue
            line = text.count("\n", 0, match.start()) + 1
            for ref in lookup_refs(value):
                yield line + ref.line - 1, ref
        return
    if suffix in (".yaml", ".yml"):
        try:
            nodes = list(compose_each(text))
        except yaml.YAMLError:
            nodes = []
        if nodes:
            for scalar in _scalars(nodes):
                block = scalar.style in ("|", ">")
                for ref in lookup_refs(scalar.value):
                    yield scalar.start_mark.line + 1 + block + ref.line - 1, ref
            return
    for ref in lookup_refs(text):
        yield ref.line, ref


def _scalars(nodes: Iterable[yaml.Node | None]) -> Iterator[yaml.ScalarNode]:
    stack = [n for n in nodes if n is not None]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias: read once
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            yield node
        elif isinstance(node, yaml.MappingNode):
            stack.extend(v for pair in node.value for v in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _reference_files(domain: LoadedDomain) -> tuple[list[Path], list[Diagnostic]]:
    """The files a Domain's ``references`` globs match, inside the repository only.

    The repository is the git work tree, else the working folder when the specs are under it;
    with neither, the folder above the specs' (``specs/`` beside ``alerts/``)."""
    folder = domain.path.resolve().parent
    root = repository_root(domain.path)
    if root == folder and not (folder / ".git").exists():
        root = folder.parent
    found: dict[Path, None] = {}
    problems = []
    for i, pattern in enumerate(domain.model.spec.references):
        where = ("spec", "references", i)
        matched: list[Path] = []
        for base in dict.fromkeys((folder, root, Path.cwd().resolve())):
            names = glob.glob(pattern, root_dir=base, recursive=True)
            matched = [(base / n) for n in sorted(names) if (base / n).is_file()]
            if matched:
                break
        outside = [p for p in matched if not p.resolve().is_relative_to(root)]
        if outside:
            problems.append(
                domain.diagnostic(
                    where,
                    f"references glob {pattern!r} reaches outside the repository ({root}): "
                    f"{outside[0]}",
                    hint="reference files live in the repository beside the specs",
                )
            )
            continue
        if not matched:
            problems.append(
                domain.diagnostic(
                    where,
                    f"references glob {pattern!r} matches no file",
                    hint="globs are relative to this file's folder, or else to the repository "
                    "root or the working folder; '**' matches any depth",
                    severity="warning",
                )
            )
        found.update(dict.fromkeys(matched))
    return list(found), problems


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when it is inside it (as a user would type it)."""
    try:
        return path.relative_to(Path.cwd())
    except ValueError:
        return path


def find_uses(result: LoadResult) -> tuple[ReferenceGraph, list[Diagnostic]]:
    """Every use of a lookup the specs and their Domains' reference files hold."""
    graph = ReferenceGraph()
    problems: list[Diagnostic] = []
    for lookup in result.lookups:
        graph.uses.extend(_uses_in_query(lookup))
    for domain in result.domains:
        name = domain.model.metadata.name
        files, found = _reference_files(domain)
        problems.extend(found)
        for path in map(_shown, files):
            graph.files.setdefault(name, []).append(str(path))
            try:
                too_big = path.stat().st_size > MAX_REFERENCE_FILE
                raw = b"" if too_big else path.read_bytes()
            except OSError as exc:
                problems.append(Diagnostic.for_file(path, f"cannot read: {exc.strerror}"))
                continue
            if too_big or b"\0" in raw[:8192]:
                problems.append(
                    Diagnostic(
                        str(path),
                        None,
                        None,
                        "",
                        "not read for references: "
                        + ("larger than 8 MiB" if too_big else "binary"),
                        severity="warning",
                    )
                )
                continue
            text = raw.decode("utf-8", errors="replace")
            for line, ref in _refs_in_file(text, path.suffix.lower()):
                graph.uses.append(
                    Use(
                        name,
                        ref.table,
                        ref.column,
                        str(path),
                        line,
                        ref.column_no,
                        None,
                        ref.snippet,
                    )
                )
    return graph, problems


def _ignored(use: Use, ignore: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(use.table or "", g) or fnmatch.fnmatchcase(use.address or "", g)
        for g in ignore
    )


def _known_columns(lookup: LoadedLookup) -> list[str] | None:
    """The columns a lookup's spec says it has (None when they cannot be read from the spec)."""
    columns = columns_of(lookup)
    if columns is not None:
        return [c.name for c in columns]
    query = query_of(lookup)
    return query_columns(query) if query else None


def check_references(
    result: LoadResult,
    graph: ReferenceGraph,
    *,
    strict: bool = False,
    ignore: Sequence[str] = (),
) -> list[Diagnostic]:
    """What validation says of the references: a lookup no spec defines (a warning; an error with
    ``strict``), a column the lookup's spec does not have (an error), a dynamic name (a warning:
    not checked), and query lookups that read each other in a cycle (an error)."""
    lookups = {lookup.address: lookup for lookup in result.lookups}
    found: list[Diagnostic] = []
    for use in graph.uses:
        if use.address is None:
            found.append(
                use.diagnostic(
                    f"unresolved lookup reference {use.snippet}: the query computes the "
                    "lookup's name, so it is not checked",
                    hint="name the lookup with a string literal to have it checked",
                    severity="warning",
                )
            )
            continue
        if _ignored(use, ignore):
            continue
        target = lookups.get(use.address)
        if target is None:
            found.append(
                use.diagnostic(
                    f"uses lookup {use.address}, which no spec defines ({use.snippet})",
                    hint="add its spec, or pass --ignore-references GLOB for a lookup "
                    "managed elsewhere (a built-in one)",
                    severity="error" if strict else "warning",
                )
            )
            continue
        if target.model.spec.state == "absent":
            found.append(
                use.diagnostic(
                    f"uses lookup {use.address}, which its spec deletes (state: absent)",
                    hint="remove the use in the same change, or keep the lookup",
                    severity="warning",
                )
            )
            continue
        columns = _known_columns(target)
        if use.column is not None and columns is not None and use.column not in columns:
            found.append(
                use.diagnostic(
                    f"uses column {use.column!r} of {use.address}, which its spec "
                    f"({target.path}:{target.line}) does not have (columns: "
                    f"{', '.join(columns)})",
                    hint="dropping or renaming a column breaks every query using it: change "
                    "the query in the same change, or keep the column",
                )
            )
    found.extend(_cycles(graph, lookups))
    return found


def _cycles(graph: ReferenceGraph, lookups: dict[str, LoadedLookup]) -> list[Diagnostic]:
    """One error per cycle of query lookups reading each other (a lookup reading itself too)."""
    reads: dict[str, set[str]] = {}
    for user, used in graph.edges():
        if used in lookups:
            reads.setdefault(user, set()).add(used)
    found = []
    reported: set[frozenset[str]] = set()
    for start in sorted(reads):
        path = _cycle_from(start, reads)
        if path is None or frozenset(path) in reported:
            continue
        reported.add(frozenset(path))
        lookup = lookups[start]
        found.append(
            lookup.diagnostic(
                (*inner_path(lookup), "query"),
                "query lookups read each other in a cycle: " + " → ".join([*path, path[0]]),
                hint="a query lookup can only be built from lookups that exist before it",
            )
        )
    return found


def _cycle_from(start: str, reads: dict[str, set[str]]) -> list[str] | None:
    """A cycle through ``start`` (as the list of its lookups), or None."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(reads.get(node, ())):
            if nxt == start:
                return path
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


@dataclass(frozen=True)
class LookupUses:
    """One lookup in ``reconciler refs``: whether a spec defines it, who uses it, what it uses."""

    address: str
    defined: bool
    used_by: list[Use]
    uses: list[Use]


@dataclass(frozen=True)
class RefsReport:
    """What ``reconciler refs`` shows: each lookup with its users and what it reads, and the
    references whose lookup the query computes (unresolved)."""

    lookups: list[LookupUses]
    unresolved: list[Use]
    files: dict[str, list[str]]

    def edges(self) -> list[tuple[str, str, str | None]]:
        """(user, lookup used, column) for the graph: a user is a query lookup or a file."""
        seen: dict[tuple[str, str, str | None], None] = {}
        for entry in self.lookups:
            for use in entry.used_by:
                seen.setdefault(
                    (use.user or use.where.rsplit(":", 1)[0], entry.address, use.column)
                )
            for use in entry.uses:
                if use.address is not None:
                    seen.setdefault((entry.address, use.address, use.column))
        return list(seen)


def refs_report(
    result: LoadResult, graph: ReferenceGraph, address: str | None = None
) -> RefsReport:
    """Who uses which lookup (every lookup defined or used; or only ``address`` and what it
    touches)."""
    defined = {lookup.address for lookup in result.lookups}
    used = {u.address for u in graph.uses if u.address is not None}
    addresses = sorted(defined | used)
    if address is not None:
        addresses = [a for a in addresses if fnmatch.fnmatchcase(a, address)]
    lookups = [
        LookupUses(
            a,
            a in defined,
            sorted(graph.users_of(a), key=lambda u: (u.path, u.line)),
            sorted(graph.reads(a), key=lambda u: (u.path, u.line)),
        )
        for a in addresses
    ]
    unresolved = [u for u in graph.uses if u.address is None]
    if address is not None:
        unresolved = [u for u in unresolved if u.user and fnmatch.fnmatchcase(u.user, address)]
    return RefsReport(lookups, unresolved, graph.files)
