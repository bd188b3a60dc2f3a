"""Desired state: each Lookup spec expanded into what apply sends and what the service derives.

For every spec this builds the request body of its endpoint (secrets still as ``${env:...}``
placeholders: they are resolved only when apply sends it) and the deploy config the service is
expected to derive from that body (defaults filled in, ``refreshPeriod`` → ``refreshMillis``,
``startDate`` → ``startMillis``, as in the 201 examples of the API), in canonical form.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.canonical import flatten
from reconciler.coltypes import field_type_name
from reconciler.linq import query_columns
from reconciler.sources import ENDPOINTS, key_positions
from reconciler.sources import expand as expand_source
from reconciler.spec.csvcheck import CsvScan
from reconciler.spec.loader import ENV_RE, LoadedLookup, spec_hash_of
from reconciler.spec.model import CsvSource, LookupSpec


@dataclass(frozen=True)
class CsvContent:
    """A ``csv.file`` lookup's local CSV: where it is and what it holds."""

    path: Path
    sha256: str
    rows: int
    size: int
    spec: CsvSource  # the csv block (columns, key, header options), for row-level diffs


@dataclass
class DesiredLookup:
    """One lookup as the specs want it."""

    address: str
    domain: str
    name: str
    state: str  # present / absent
    protect: bool
    kind: str | None  # the source block: csv, staticQuery, ...
    endpoint: str | None
    body: dict[str, Any]  # the request body (secrets as placeholders)
    canonical: dict[str, Any]  # the canonical config the service should report (state: the same)
    ignore: frozenset[str] = frozenset()  # paths the service decides (e.g. an unset startDate)
    fields: list[tuple[str, str, bool]] | None = None  # observable columns (name, type, key)
    query_columns: list[str] | None = None  # a query source's column names, when readable
    csv: CsvContent | None = None
    document: Any = field(default=None, repr=False)  # the spec document's data, for spec_hash
    source: str = ""  # file:line of the spec
    overlay: str | None = None  # file:line of the Overlay merged onto it (fan-out)
    labels: dict[str, str] = field(default_factory=dict)  # metadata.labels, for policies

    @functools.cached_property
    def spec_hash(self) -> str:
        """sha256 of its spec document (detects edits to a saved plan's specs); worked out when
        asked, which a plan of 10,000 lookups that is not saved never does."""
        return spec_hash_of(self.document) if self.document is not None else ""

    @property
    def uploads_csv(self) -> bool:
        """True for ``csv.file``: deployed as a multipart upload."""
        return self.csv is not None


def expand(spec: LookupSpec) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(request body, expected nested config, ignored paths) for a spec with one source block."""
    kind = spec.source_kind
    if kind is None:  # pragma: no cover - validation guarantees one source block
        raise ValueError("no source block in spec")
    return expand_source(kind, spec.source, spec.visibility, spec.notify_status)


def observable_fields(config: dict[str, Any]) -> list[tuple[str, str, bool]] | None:
    """The ``fields`` metadata the service should report for a CSV source (None for queries)."""
    recipe = config["recipe"]
    columns = recipe["source"].get("columns")
    if not columns:
        return None
    names = [c["name"] for c in columns]
    key = recipe["key"]
    keys = set(key_positions(names, key["type"], key.get("column"), key.get("columns")) or [])
    return [(c["name"], field_type_name(c["type"]), i in keys) for i, c in enumerate(columns)]


def desired_lookup(loaded: LoadedLookup, scans: dict[Path, CsvScan] | None = None) -> DesiredLookup:
    """The DesiredLookup of one loaded (and validated) spec."""
    model = loaded.model
    spec = model.spec
    kind = spec.source_kind
    desired = DesiredLookup(
        address=model.address,
        domain=model.metadata.domain,
        name=model.metadata.name,
        state=spec.state,
        protect=spec.protect,
        kind=kind,
        endpoint=ENDPOINTS[kind] if kind else None,
        body={},
        canonical={},
        document=loaded.data,
        source=f"{loaded.path}:{loaded.line}",
        overlay=loaded.overlay,
        labels=dict(model.metadata.labels),
    )
    if kind is None:  # state: absent with no source block
        return desired
    body, config, ignore = expand(spec)
    csv = None
    path = loaded.csv_data()
    if path is not None and scans is not None and path in scans:
        scan = scans[path]
        block = spec.block(CsvSource)
        if not (block is not None):
            raise RuntimeError("invariant broken: block is not None")
        csv = CsvContent(path, scan.sha256, scan.rows, scan.size, block)
    desired.body = body
    desired.canonical = flatten(config)
    desired.ignore = frozenset(ignore)
    desired.fields = observable_fields(config)
    query = config["recipe"]["source"].get("query")
    desired.query_columns = query_columns(query) if isinstance(query, str) else None
    desired.csv = csv
    return desired


def placeholders(body: Any) -> list[str]:
    """The environment variables a body's ``${env:...}`` placeholders need (those written with
    ``:-default`` need none)."""
    found: list[str] = []
    if isinstance(body, dict):
        for value in body.values():
            found.extend(placeholders(value))
    elif isinstance(body, list):
        for value in body:
            found.extend(placeholders(value))
    elif isinstance(body, str):
        found.extend(m.group(1) for m in ENV_RE.finditer(body) if m.group(2) is None)
    return found


def resolve_secrets(body: Any, env: Mapping[str, str]) -> Any:
    """A copy of ``body`` with every ``${env:NAME}`` replaced (callers check ``placeholders`` first)."""
    if isinstance(body, dict):
        return {k: resolve_secrets(v, env) for k, v in body.items()}
    if isinstance(body, list):
        return [resolve_secrets(v, env) for v in body]
    if isinstance(body, str):
        return ENV_RE.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ":-")[2:], body)
    return body


__all__ = [
    "CsvContent",
    "DesiredLookup",
    "desired_lookup",
    "expand",
    "placeholders",
    "resolve_secrets",
]
