"""Desired state: each Lookup spec expanded into what apply sends and what the service derives.

For every spec this builds the request body of its endpoint (secrets still as ``${env:...}``
placeholders: they are resolved only when apply sends it) and the deploy config the service is
expected to derive from that body (defaults filled in, ``refreshPeriod`` → ``refreshMillis``,
``startDate`` → ``startMillis``, as in the 201 examples of the API), in canonical form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.canonical import flatten
from reconciler.coltypes import field_type_name, parse_duration_ms
from reconciler.spec.checks import parse_start_date, query_columns
from reconciler.spec.csvcheck import CsvScan, key_positions
from reconciler.spec.loader import ENV_RE, LoadedLookup
from reconciler.spec.model import SOURCE_KINDS, CsvSource, Key, LookupSpec, LookupType

DEFAULT_REFRESH_MS = 300_000


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
    flat: dict[str, Any]  # the canonical config the service should report
    ignore: frozenset[str] = frozenset()  # paths the service decides (e.g. an unset startDate)
    fields: list[tuple[str, str, bool]] | None = None  # observable columns (name, type, key)
    query_columns: list[str] | None = None  # a query source's column names, when readable
    csv: CsvContent | None = None
    spec_hash: str = ""
    source: str = ""  # file:line of the spec

    @property
    def uploads_csv(self) -> bool:
        """True for ``csv.file``: deployed as a multipart upload."""
        return self.csv is not None


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def _key(key: Key | None) -> dict[str, Any]:
    if key is None:
        return {"type": "first-column"}
    out: dict[str, Any] = {"type": key.type}
    if key.type == "column":
        out["column"] = key.column
    if key.type == "col-hash":
        out["columns"] = list(key.columns or [])
    return out


def _lookup_type(value: LookupType | None) -> dict[str, Any]:
    if value is None:
        return {"type": "normal"}
    return _drop_none(value.model_dump())


def _history(keep: bool, column: str | None) -> dict[str, Any]:
    if not keep:
        return {"type": "normal"}
    if column:
        return {"type": "historic", "instantPolicy": "column", "columnName": column}
    return {"type": "historic", "instantPolicy": "natural"}


def _recipe(**fields: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "recipeType": "once",
        "lookupType": {"type": "normal"},
        "append": False,
        "key": {"type": "first-column"},
        "columnFilter": None,
        "contribution": {"type": "add"},
        "secondaryIndexes": {"type": "none"},
        "refreshMillis": None,
        "startMillis": None,
        "requiresDate": False,
    }
    recipe.update(fields)
    return recipe


def default_refresh_ms(query: str) -> int:
    """Devo's default ``refreshPeriod``: the query's grouping period (``every 1h``), else 5m."""
    every = re.search(r"\bevery\s+(\d+(?:ms|s|m|h|d|w))", query)
    return parse_duration_ms(every.group(1)) if every else DEFAULT_REFRESH_MS


def _columns_body(columns: list[Any]) -> list[dict[str, Any]]:
    return [_drop_none({"name": c.name, "type": c.type, "from": c.from_}) for c in columns]


def expand(spec: LookupSpec) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(request body, expected nested config, ignored paths) for a spec with one source block."""
    kind = spec.source_kind
    visibility = spec.visibility
    ignore: set[str] = set()
    body: dict[str, Any]
    if kind == "csv":
        csv = spec.csv
        assert csv is not None
        provider = csv.fileProvider.model_dump(exclude_none=True) if csv.fileProvider else None
        body = _drop_none(
            {
                "visibility": visibility,
                "columns": _columns_body(csv.columns),
                "fileProvider": provider,
                "key": _key(csv.key) if csv.key else None,
                "skipPreface": csv.skipPreface,
                "hasHeader": csv.hasHeader,
                "skipEmptyLines": csv.skipEmptyLines,
                "contribution": csv.contribution.model_dump(exclude_none=True)
                if csv.contribution
                else None,
            }
        )
        recipe = _recipe(
            source={
                "columns": _columns_body(csv.columns),
                "fileProvider": provider,
                "skipPreface": csv.skipPreface,
                "hasHeader": csv.hasHeader,
                "skipEmptyLines": csv.skipEmptyLines,
            },
            key=_key(csv.key),
            contribution=csv.contribution.model_dump(exclude_none=True)
            if csv.contribution
            else {"type": "add"},
        )
        # The docs never say which recipeType deploy-csv derives (their example even says
        # periodic): it is the service's choice, not the spec's.
        ignore.add("recipe.recipeType")
        if csv.file is not None and csv.upload != "full":
            # A delta upload leaves append: true in the recipe; no spec field sets it here.
            ignore.add("recipe.append")
    elif kind == "staticQuery":
        static = spec.staticQuery
        assert static is not None
        body = _drop_none(
            {
                "visibility": visibility,
                "query": static.query,
                "key": _key(static.key) if static.key else None,
                "keepHistory": static.keepHistory or None,
                "columnTimeReference": static.columnTimeReference,
                "append": static.append or None,
            }
        )
        recipe = _recipe(
            source={"query": static.query},
            key=_key(static.key),
            append=static.append,
            lookupType=_history(static.keepHistory, static.columnTimeReference),
        )
    elif kind == "periodicQuery":
        periodic = spec.periodicQuery
        assert periodic is not None
        body = _drop_none(
            {
                "visibility": visibility,
                "query": periodic.query,
                "key": _key(periodic.key) if periodic.key else None,
                "refreshPeriod": periodic.refreshPeriod,
                "startDate": periodic.startDate,
                "append": periodic.append or None,
                "keepHistory": periodic.keepHistory or None,
            }
        )
        refresh = (
            parse_duration_ms(periodic.refreshPeriod)
            if periodic.refreshPeriod
            else default_refresh_ms(periodic.query)
        )
        start = parse_start_date(periodic.startDate) if periodic.startDate is not None else None
        recipe = _recipe(
            recipeType="periodic",
            source={"query": periodic.query},
            key=_key(periodic.key),
            append=periodic.append,
            lookupType=_history(periodic.keepHistory, None),
            refreshMillis=refresh,
            startMillis=start,
            requiresDate=True,
        )
        ignore.add("recipe.requiresDate")  # derived by the service for simplified bodies
        if start is None:
            ignore.add("recipe.startMillis")  # the service picks the request time
    elif kind == "slidingWindowQuery":
        window = spec.slidingWindowQuery
        assert window is not None
        body = _drop_none(
            {
                "visibility": visibility,
                "query": window.query,
                "key": _key(window.key) if window.key else None,
                "windowSize": window.windowSize,
                "refreshPeriod": window.refreshPeriod,
                "startDate": window.startDate,
            }
        )
        start = parse_start_date(window.startDate) if window.startDate is not None else None
        recipe = _recipe(
            recipeType="periodic",
            source={"query": window.query},
            key=_key(window.key),
            refreshMillis=parse_duration_ms(window.refreshPeriod)
            if window.refreshPeriod
            else default_refresh_ms(window.query),
            startMillis=start,
            requiresDate=True,
            windowMillis=parse_duration_ms(window.windowSize),
        )
        ignore.add("recipe.requiresDate")
        if start is None:
            ignore.add("recipe.startMillis")
    elif kind == "recipe":
        given = spec.recipe
        assert given is not None
        recipe_body = given.model_dump(by_alias=True, exclude_none=True)
        source = recipe_body["source"]
        if "columns" in source:
            source["columns"] = _columns_body(given.source.columns or [])
        body = {
            "visibility": visibility,
            "recipe": recipe_body,
            "notifyStatus": bool(spec.notifyStatus),
        }
        if given.source.query:
            full_source: dict[str, Any] = {"query": given.source.query}
        else:
            full_source = {
                "columns": _columns_body(given.source.columns or []),
                "fileProvider": given.source.fileProvider.model_dump(exclude_none=True)
                if given.source.fileProvider
                else None,
                "skipPreface": given.source.skipPreface,
                "hasHeader": given.source.hasHeader,
                "skipEmptyLines": given.source.skipEmptyLines,
            }
        recipe = _recipe(
            recipeType=given.recipeType,
            source=full_source,
            lookupType=_lookup_type(given.lookupType),
            append=given.append,
            key=_key(given.key),
            columnFilter=given.columnFilter,
            contribution=given.contribution.model_dump(exclude_none=True)
            if given.contribution
            else {"type": "add"},
            secondaryIndexes=given.secondaryIndexes.model_dump(exclude_none=True)
            if given.secondaryIndexes
            else {"type": "none"},
            refreshMillis=given.refreshMillis,
            startMillis=given.startMillis,
            requiresDate=given.requiresDate,
        )
    else:  # pragma: no cover - validation guarantees one source block
        raise ValueError(f"no source block in spec (kind {kind!r})")
    config = {
        "visibility": {"type": visibility},
        "recipe": recipe,
        "notifyStatus": bool(spec.notifyStatus) if kind == "recipe" else False,
    }
    if kind != "recipe":
        ignore.add("notifyStatus")  # only deploy-config bodies carry it
    return body, config, ignore


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
        endpoint=SOURCE_KINDS[kind] if kind else None,
        body={},
        flat={},
        spec_hash=loaded.spec_hash,
        source=f"{loaded.path}:{loaded.line}",
    )
    if kind is None:  # state: absent with no source block
        return desired
    body, config, ignore = expand(spec)
    csv = None
    path = loaded.csv_path()
    if path is not None and scans is not None and path in scans:
        scan = scans[path]
        assert spec.csv is not None
        csv = CsvContent(path, scan.sha256, scan.rows, scan.size, spec.csv)
    desired.body = body
    desired.flat = flatten(config)
    desired.ignore = frozenset(ignore)
    desired.fields = observable_fields(config)
    query = config["recipe"]["source"].get("query")
    desired.query_columns = query_columns(query) if isinstance(query, str) else None
    desired.csv = csv
    return desired


def placeholders(body: Any) -> list[str]:
    """The environment variables a body's ``${env:...}`` placeholders need."""
    found: list[str] = []
    if isinstance(body, dict):
        for value in body.values():
            found.extend(placeholders(value))
    elif isinstance(body, list):
        for value in body:
            found.extend(placeholders(value))
    elif isinstance(body, str):
        found.extend(ENV_RE.findall(body))
    return found


def resolve_secrets(body: Any, env: dict[str, str]) -> Any:
    """A copy of ``body`` with every ``${env:NAME}`` replaced (callers check ``placeholders`` first)."""
    if isinstance(body, dict):
        return {k: resolve_secrets(v, env) for k, v in body.items()}
    if isinstance(body, list):
        return [resolve_secrets(v, env) for v in body]
    if isinstance(body, str):
        return ENV_RE.sub(lambda m: env[m.group(1)], body)
    return body


__all__ = [
    "CsvContent",
    "DesiredLookup",
    "default_refresh_ms",
    "desired_lookup",
    "expand",
    "placeholders",
    "resolve_secrets",
]
