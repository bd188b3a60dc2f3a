"""Pieces every source kind shares: the spec's building-block models and their Devo bodies.

The models (``Column``, ``Key``, ``FileProvider``, ...) are the blocks Devo's request bodies are made
of; each kind's module composes them. The helpers turn them into request bodies and recipe fields,
and back (for ``import``), the same way for every kind.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.canonical import SECRET_KEYS
from reconciler.coltypes import ColumnType, parse_duration_ms
from reconciler.timeframe import parse_start_date

KeyType = Literal["first-column", "column", "row-hash", "col-hash", "seq"]
DEFAULT_REFRESH_MS = 300_000


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Column(Strict):
    """A CSV column: its name, Devo type, and (deploy-config only) its 0-based index in the CSV."""

    name: str = Field(min_length=1)
    type: ColumnType = "STRING"
    from_: int | None = Field(default=None, alias="from", ge=0)


class Key(Strict):
    """How the lookup's key is built (``key`` in Devo's bodies)."""

    type: KeyType = "first-column"
    column: str | None = None
    columns: list[str] | None = None


class Contribution(Strict):
    """Whether rows add or delete entries, or a string column says which (``col``)."""

    type: Literal["add", "del", "col"] = "add"
    name: str | None = None


class LookupType(Strict):
    """``normal`` or ``historic`` lookups and, for historic ones, where each row's instant comes from."""

    type: Literal["normal", "historic"] = "normal"
    instantPolicy: Literal["natural", "const", "column"] | None = None
    instant: int | float | None = None
    columnName: str | None = None


class SecondaryIndexes(Strict):
    """Extra indexes: none, all columns, or by name (``map``)."""

    type: Literal["none", "all", "by-name"] = "none"
    map: dict[str, Any] | None = None


class FileProvider(Strict):
    """A CSV in S3 (or an S3-compatible store). ``accessKey``/``secretKey`` should be ``${env:...}``."""

    bucketName: str = Field(min_length=1)
    keyName: str = Field(min_length=1)
    transferOwnership: bool
    accessKey: str | None = None
    secretKey: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    region: str | None = None


@dataclass(frozen=True)
class Expansion:
    """What one source block expands to: the request body, the expected recipe, ignored paths."""

    body: dict[str, Any]  # the request body, secrets still as ``${env:...}`` placeholders
    recipe: dict[str, Any]  # the full recipe the service should derive from that body
    ignore: frozenset[str] = frozenset()  # paths the service decides, never compared
    notify_status: bool = False  # deploy-config bodies carry notifyStatus; the others do not


@dataclass(frozen=True)
class SourceKind:
    """One source block: its name in the spec, its endpoint, its model, expansion and import, and
    the rules its block must keep that its model cannot state."""

    name: str  # the spec block: csv, staticQuery, ...
    endpoint: str  # deploy-csv, deploy-static-query, ...
    model: type[BaseModel]
    expand: Callable[[Any, str, bool | None], Expansion]  # (block, visibility, notifyStatus)
    # The block ``import`` writes for a live recipe, or None when this kind cannot hold it.
    candidate: Callable[[str, str, dict[str, Any]], dict[str, Any] | None]
    check: Callable[[Any], Iterator[Finding]] = field(default=lambda block: iter(()))


@dataclass(frozen=True)
class Finding:
    """What a source kind's check says of its block: where (relative to the block), what is wrong,
    and how to fix it. The spec layer places it in its file and line."""

    loc: tuple[str | int, ...]
    message: str
    hint: str | None = None


#: Devo refuses a refresh period below one minute.
MIN_REFRESH_MS = 60_000


def suggest(word: str, choices: list[str]) -> str:
    """A did-you-mean for ``word`` among ``choices``, or the choices."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return f"did you mean {close[0]!r}?" if close else f"columns: {', '.join(choices)}"


def check_duration(loc: tuple[str, ...], value: str | None, minimum: int) -> Iterator[Finding]:
    """A Devo duration (``30s``, ``1h30m``) of at least ``minimum`` milliseconds."""
    if value is None:
        return
    try:
        millis = parse_duration_ms(value)
    except ValueError:
        yield Finding(loc, f"{value!r} is not a Devo duration", "use e.g. 30s, 5m, 1h, 1d or 1h30m")
        return
    if millis < minimum:
        yield Finding(
            loc,
            f"{value!r} is shorter than the minimum of {minimum // 1000}s",
            "Devo refuses refreshPeriod below 1 minute",
        )


def check_start_date(value: str | int | None) -> Iterator[Finding]:
    """``startDate``: ISO-8601 or epoch milliseconds."""
    if value is None:
        return
    try:
        parse_start_date(value)
    except ValueError:
        yield Finding(
            ("startDate",),
            f"{value!r} is not a date",
            "use ISO-8601 (2024-01-31T00:00:00Z) or epoch milliseconds",
        )


# --- spec → request body and expected recipe ---------------------------------------------------


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without its ``None`` values (the body omits what the spec leaves unset)."""
    return {k: v for k, v in data.items() if v is not None}


def key_body(key: Key | None) -> dict[str, Any]:
    """The ``key`` object Devo derives (``first-column`` when the spec names none)."""
    if key is None:
        return {"type": "first-column"}
    out: dict[str, Any] = {"type": key.type}
    if key.type == "column":
        out["column"] = key.column
    if key.type == "col-hash":
        out["columns"] = list(key.columns or [])
    return out


def lookup_type_body(value: LookupType | None) -> dict[str, Any]:
    """The ``lookupType`` object (``normal`` when unset)."""
    if value is None:
        return {"type": "normal"}
    return drop_none(value.model_dump())


def history_body(keep: bool, column: str | None) -> dict[str, Any]:
    """The ``lookupType`` the simplified query bodies' ``keepHistory`` stands for."""
    if not keep:
        return {"type": "normal"}
    if column:
        return {"type": "historic", "instantPolicy": "column", "columnName": column}
    return {"type": "historic", "instantPolicy": "natural"}


def recipe(**fields: Any) -> dict[str, Any]:
    """A full deploy-config recipe: Devo's defaults, overridden by ``fields``."""
    out: dict[str, Any] = {
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
    out.update(fields)
    return out


def columns_body(columns: list[Column]) -> list[dict[str, Any]]:
    """Columns as Devo's bodies spell them (``from`` only when the spec gives it)."""
    return [drop_none({"name": c.name, "type": c.type, "from": c.from_}) for c in columns]


def provider_body(provider: FileProvider | None) -> dict[str, Any] | None:
    """The ``fileProvider`` object (secrets stay ``${env:...}`` placeholders here)."""
    return provider.model_dump(exclude_none=True) if provider else None


def default_refresh_ms(query: str) -> int:
    """Devo's default ``refreshPeriod``: the query's grouping period (``every 1h``), else 5m."""
    every = re.search(r"\bevery\s+(\d+(?:ms|s|m|h|d|w))", query)
    return parse_duration_ms(every.group(1)) if every else DEFAULT_REFRESH_MS


def key_positions(
    column_names: list[str] | tuple[str, ...],
    key_type: str,
    key_column: str | None,
    key_columns: list[str] | tuple[str, ...] | None,
) -> list[int] | None:
    """Indexes of the columns that form the key, or None when the key type has no column key."""
    names = list(column_names)
    if key_type == "first-column":
        return [0]
    if key_type == "column" and key_column is not None and key_column in names:
        return [names.index(key_column)]
    if key_type == "col-hash" and key_columns and all(c in names for c in key_columns):
        return [names.index(c) for c in key_columns]
    return None


# --- live deploy config → spec block (import) --------------------------------------------------


def duration_text(millis: int) -> str:
    """300000 → ``5m``; the largest unit that divides exactly."""
    for unit, size in (
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ):
        if millis and millis % size == 0:
            return f"{millis // size}{unit}"
    return f"{millis}ms"


def iso_date(millis: int) -> str:
    """Epoch ms → ``2026-01-01T00:00:00Z``."""
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        "Z" if moment.microsecond == 0 else f".{moment.microsecond // 1000:03d}Z"
    )


def env_name(domain: str, name: str, secret: str) -> str:
    """``${env:ACME_GEO_SECRET_KEY}``-style variable names for masked secrets."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", f"{domain}_{name}").strip("_").upper()
    suffix = "ACCESS_KEY" if secret == "accessKey" else "SECRET_KEY"
    return f"{base}_{suffix}"


def imported_key(recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The spec's ``key`` for a live recipe's key (None for the default, first-column)."""
    key = recipe.get("key") or {"type": "first-column"}
    if key.get("type", "first-column") == "first-column":
        return None
    out: dict[str, Any] = {"type": key["type"]}
    if key.get("column"):
        out["column"] = key["column"]
    if key.get("columns"):
        out["columns"] = list(key["columns"])
    return out


def imported_provider(domain: str, name: str, provider: dict[str, Any]) -> dict[str, Any]:
    """A live ``fileProvider`` with its masked secrets as ``${env:...}`` placeholders."""
    out: dict[str, Any] = {}
    for field_name in ("bucketName", "keyName", "transferOwnership", "host", "port", "region"):
        if provider.get(field_name) is not None:
            out[field_name] = provider[field_name]
    for secret in sorted(SECRET_KEYS):
        if provider.get(secret):
            out[secret] = "${env:" + env_name(domain, name, secret) + "}"
    return out


def imported_columns(source: dict[str, Any]) -> list[dict[str, Any]]:
    """Live columns as the spec writes them (types upper-case, ``from`` only when given)."""
    columns = []
    for column in source.get("columns") or []:
        item: dict[str, Any] = {
            "name": column["name"],
            "type": str(column.get("type", "STRING")).upper(),
        }
        if column.get("from") is not None:
            item["from"] = column["from"]
        columns.append(item)
    return columns


def historic(recipe: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(is the live recipe historic, its lookupType)."""
    lookup_type = recipe.get("lookupType") or {"type": "normal"}
    return lookup_type.get("type") == "historic", lookup_type
