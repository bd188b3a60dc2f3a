"""``recipe``: the deploy-config recipe exactly as Devo documents it. Endpoint ``deploy-config``.

The kind that can hold any lookup: ``import`` falls back to it when no simpler kind reproduces the
live config.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from reconciler.linq import query_columns
from reconciler.sources._shared import (
    MIN_REFRESH_MS,
    Column,
    Contribution,
    Expansion,
    FileProvider,
    Finding,
    Key,
    LookupType,
    SecondaryIndexes,
    SourceKind,
    Strict,
    columns_body,
    imported_columns,
    imported_provider,
    key_body,
    lookup_type_body,
    provider_body,
    recipe,
    suggest,
)


class RecipeSource(Strict):
    """``recipe.source``: either a ``query`` or a CSV in S3 (``columns`` + ``fileProvider``)."""

    query: str | None = None
    columns: list[Column] | None = None
    fileProvider: FileProvider | None = None
    skipPreface: str | None = None
    hasHeader: bool = False
    skipEmptyLines: bool = False


class Recipe(Strict):
    """``recipe``: the deploy-config recipe exactly as Devo documents it → deploy-config."""

    recipeType: Literal["once", "periodic"]
    source: RecipeSource
    lookupType: LookupType | None = None
    append: bool = False
    key: Key | None = None
    columnFilter: list[str] | None = None
    contribution: Contribution | None = None
    secondaryIndexes: SecondaryIndexes | None = None
    refreshMillis: int | None = Field(default=None, ge=0)
    startMillis: int | None = Field(default=None, ge=0)
    requiresDate: bool = False


def expand(block: Recipe, visibility: str, notify_status: bool | None) -> Expansion:
    """The deploy-config body and the full recipe it states."""
    recipe_body = block.model_dump(by_alias=True, exclude_none=True)
    source = recipe_body["source"]
    if "columns" in source:
        source["columns"] = columns_body(block.source.columns or [])
    body = {"visibility": visibility, "recipe": recipe_body, "notifyStatus": bool(notify_status)}
    if block.source.query:
        full_source: dict[str, Any] = {"query": block.source.query}
    else:
        full_source = {
            "columns": columns_body(block.source.columns or []),
            "fileProvider": provider_body(block.source.fileProvider),
            "skipPreface": block.source.skipPreface,
            "hasHeader": block.source.hasHeader,
            "skipEmptyLines": block.source.skipEmptyLines,
        }
    expected = recipe(
        recipeType=block.recipeType,
        source=full_source,
        lookupType=lookup_type_body(block.lookupType),
        append=block.append,
        key=key_body(block.key),
        columnFilter=block.columnFilter,
        contribution=block.contribution.model_dump(exclude_none=True)
        if block.contribution
        else {"type": "add"},
        secondaryIndexes=block.secondaryIndexes.model_dump(exclude_none=True)
        if block.secondaryIndexes
        else {"type": "none"},
        refreshMillis=block.refreshMillis,
        startMillis=block.startMillis,
        requiresDate=block.requiresDate,
    )
    return Expansion(body, expected, notify_status=bool(notify_status))


_RECIPE_FIELDS = (
    "lookupType",
    "append",
    "key",
    "columnFilter",
    "contribution",
    "secondaryIndexes",
    "refreshMillis",
    "startMillis",
    "requiresDate",
)


def candidate(domain: str, name: str, live: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe block of any live lookup: its recipe, secrets as placeholders."""
    source = dict(live.get("source") or {})
    if source.get("query"):
        source = {"query": source["query"]}
    else:
        source = {k: v for k, v in source.items() if v is not None}
        if "columns" in source:
            source["columns"] = imported_columns(source)
        if source.get("fileProvider"):
            source["fileProvider"] = imported_provider(domain, name, source["fileProvider"])
    block: dict[str, Any] = {"recipeType": live.get("recipeType", "once"), "source": source}
    for field_name in _RECIPE_FIELDS:
        value = live.get(field_name)
        if value is None:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if v is not None}
        block[field_name] = value
    return block


def check(block: Recipe) -> Iterator[Finding]:
    """A recipe's rules: its source is a query or a CSV in S3; periodic timing; columnFilter,
    secondary indexes and the historic lookup type against the source's columns."""
    source = block.source
    is_query = source.query is not None
    is_csv = source.columns is not None or source.fileProvider is not None
    if is_query == is_csv:
        yield Finding(
            ("source",),
            "source must be either a query or a CSV in S3 (columns + fileProvider)",
            "set 'query', or 'columns' and 'fileProvider'",
        )
    elif is_csv and (source.columns is None or source.fileProvider is None):
        missing = "columns" if source.columns is None else "fileProvider"
        yield Finding(
            ("source",),
            f"a CSV source needs '{missing}'",
            "a recipe CSV source has both columns and fileProvider",
        )
    if block.recipeType == "periodic":
        for name in ("refreshMillis", "startMillis"):
            if getattr(block, name) is None:
                yield Finding(
                    ("recipeType",),
                    f"a periodic recipe needs '{name}'",
                    f"add {name}: <milliseconds>",
                )
        if block.refreshMillis is not None and block.refreshMillis < MIN_REFRESH_MS:
            yield Finding(
                ("refreshMillis",),
                f"{block.refreshMillis} ms is shorter than 1 minute",
                "use at least 60000",
            )
    else:
        for name in ("refreshMillis", "startMillis"):
            if getattr(block, name) is not None:
                yield Finding(
                    (name,),
                    f"'{name}' only applies to periodic recipes",
                    "remove it, or set recipeType: periodic",
                )
    names = [c.name for c in source.columns] if source.columns else None
    if names is None and source.query:
        names = query_columns(source.query)
    if block.columnFilter is not None and names is not None:
        for i, name in enumerate(block.columnFilter):
            if name not in names:
                yield Finding(
                    ("columnFilter", i),
                    f"{name!r} is not a column of the source",
                    suggest(name, names),
                )
    indexes = block.secondaryIndexes
    if indexes is not None and indexes.type == "by-name" and not indexes.map:
        yield Finding(
            ("secondaryIndexes", "type"),
            "secondary indexes 'by-name' need 'map'",
            "add map: {index_name: [columns]}",
        )
    if block.lookupType is not None:
        yield from _lookup_type(block.lookupType, names)


def _lookup_type(lookup_type: LookupType, names: list[str] | None) -> Iterator[Finding]:
    at = ("lookupType",)
    if lookup_type.type == "normal":
        for name in ("instantPolicy", "instant", "columnName"):
            if getattr(lookup_type, name) is not None:
                yield Finding(
                    (*at, name),
                    f"'{name}' only applies to historic lookups",
                    "remove it, or set type: historic",
                )
        return
    policy = lookup_type.instantPolicy
    if policy is None:
        yield Finding(
            (*at, "type"),
            "a historic lookup needs 'instantPolicy'",
            "natural, const (with instant) or column (with columnName)",
        )
    elif policy == "const" and lookup_type.instant is None:
        yield Finding(
            (*at, "instantPolicy"),
            "instantPolicy 'const' needs 'instant'",
            "add instant: <epoch ms>",
        )
    elif policy == "column":
        if not lookup_type.columnName:
            yield Finding(
                (*at, "instantPolicy"),
                "instantPolicy 'column' needs 'columnName'",
                "add columnName: <a timestamp column>",
            )
        elif names is not None and lookup_type.columnName not in names:
            yield Finding(
                (*at, "columnName"),
                f"{lookup_type.columnName!r} is not a column",
                suggest(lookup_type.columnName, names),
            )


KIND = SourceKind("recipe", "deploy-config", Recipe, expand, candidate, check)
