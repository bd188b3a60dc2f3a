"""``recipe``: the deploy-config recipe exactly as Devo documents it. Endpoint ``deploy-config``.

The kind that can hold any lookup: ``import`` falls back to it when no simpler kind reproduces the
live config.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from reconciler.sources._shared import (
    Column,
    Contribution,
    Expansion,
    FileProvider,
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


KIND = SourceKind("recipe", "deploy-config", Recipe, expand, candidate)
