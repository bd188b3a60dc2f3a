"""``csv``: a lookup from a CSV kept in git (``file``, uploaded) or in S3 (``fileProvider``).

Endpoint ``deploy-csv``. A ``file`` is sent as a multipart upload (whole, or as a delta of rows:
``upload``); a ``fileProvider`` makes Devo fetch the CSV itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from reconciler.sources._shared import (
    Column,
    Contribution,
    Expansion,
    FileProvider,
    Finding,
    Key,
    SourceKind,
    Strict,
    columns_body,
    drop_none,
    imported_columns,
    imported_key,
    imported_provider,
    key_body,
    key_positions,
    provider_body,
    recipe,
)


class CsvSource(Strict):
    """``csv``: a lookup from a CSV kept in git (``file``) or in S3 (``fileProvider``) → deploy-csv."""

    file: str | None = None
    fileProvider: FileProvider | None = None
    columns: list[Column] = Field(min_length=1)
    key: Key | None = None
    hasHeader: bool = False
    skipEmptyLines: bool = False
    skipPreface: str | None = None
    contribution: Contribution | None = None
    upload: Literal["auto", "full", "delta"] = Field(
        default="auto",
        description="csv.file only: how a changed CSV is sent. full: the whole file; delta: only "
        "the rows that changed since the recorded content (Devo's append + del/add row protocol); "
        "auto: delta when the recorded content is known and the change is small.",
    )


def key_columns(block: CsvSource) -> list[int] | None:
    """The positions of the key's columns in the CSV (None when the key names unknown columns)."""
    key = block.key
    return key_positions(
        [c.name for c in block.columns],
        key.type if key else "first-column",
        key.column if key else None,
        key.columns if key else None,
    )


def expand(block: CsvSource, visibility: str, notify_status: bool | None) -> Expansion:
    """The deploy-csv body and the recipe Devo derives from it."""
    provider = provider_body(block.fileProvider)
    contribution = block.contribution.model_dump(exclude_none=True) if block.contribution else None
    body = drop_none(
        {
            "visibility": visibility,
            "columns": columns_body(block.columns),
            "fileProvider": provider,
            "key": key_body(block.key) if block.key else None,
            "skipPreface": block.skipPreface,
            "hasHeader": block.hasHeader,
            "skipEmptyLines": block.skipEmptyLines,
            "contribution": contribution,
        }
    )
    expected = recipe(
        source={
            "columns": columns_body(block.columns),
            "fileProvider": provider,
            "skipPreface": block.skipPreface,
            "hasHeader": block.hasHeader,
            "skipEmptyLines": block.skipEmptyLines,
        },
        key=key_body(block.key),
        contribution=contribution or {"type": "add"},
    )
    # The docs never say which recipeType deploy-csv derives (their example even says periodic):
    # it is the service's choice, not the spec's.
    ignore = {"recipe.recipeType"}
    if block.file is not None and block.upload != "full":
        ignore.add("recipe.append")  # a delta upload leaves append: true; no spec field sets it
    return Expansion(body, expected, frozenset(ignore))


def candidate(domain: str, name: str, live: dict[str, Any]) -> dict[str, Any] | None:
    """The csv block of a live lookup built from columns (a file upload or an S3 provider)."""
    source = live.get("source") or {}
    if source.get("query") or not source.get("columns"):
        return None
    block: dict[str, Any] = {"columns": imported_columns(source)}
    if source.get("fileProvider"):
        block = {"fileProvider": imported_provider(domain, name, source["fileProvider"]), **block}
    else:  # uploaded: the data lives only in Devo and in the file it came from
        block = {"file": f"data/{name}.csv", **block}
    key = imported_key(live)
    if key:
        block["key"] = key
    for option in ("hasHeader", "skipEmptyLines"):
        if source.get(option):
            block[option] = True
    if source.get("skipPreface"):
        block["skipPreface"] = source["skipPreface"]
    contribution = live.get("contribution") or {"type": "add"}
    if contribution.get("type", "add") != "add":
        block["contribution"] = {k: v for k, v in contribution.items() if v is not None}
    return block


def check(block: CsvSource) -> Iterator[Finding]:
    """Exactly one of ``file`` and ``fileProvider``."""
    has_file, has_s3 = block.file is not None, block.fileProvider is not None
    if has_file == has_s3:
        yield Finding(
            (),
            "set exactly one of 'file' and 'fileProvider'"
            if has_file
            else "no CSV location: neither 'file' nor 'fileProvider'",
            "file: a CSV in git, relative to this spec; fileProvider: a CSV in S3",
        )


KIND = SourceKind("csv", "deploy-csv", CsvSource, expand, candidate, check)
