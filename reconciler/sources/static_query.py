"""``staticQuery``: a lookup from a query run once. Endpoint ``deploy-static-query``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field

from reconciler.sources._shared import (
    Expansion,
    Finding,
    Key,
    SourceKind,
    Strict,
    drop_none,
    historic,
    history_body,
    imported_key,
    key_body,
    recipe,
)


class StaticQuerySource(Strict):
    """``staticQuery``: a lookup from a query run once → deploy-static-query."""

    query: str = Field(min_length=1)
    key: Key | None = None
    keepHistory: bool = False
    columnTimeReference: str | None = None
    append: bool = False


def expand(block: StaticQuerySource, visibility: str, notify_status: bool | None) -> Expansion:
    """The deploy-static-query body and the recipe Devo derives from it."""
    body = drop_none(
        {
            "visibility": visibility,
            "query": block.query,
            "key": key_body(block.key) if block.key else None,
            "keepHistory": block.keepHistory or None,
            "columnTimeReference": block.columnTimeReference,
            "append": block.append or None,
        }
    )
    expected = recipe(
        source={"query": block.query},
        key=key_body(block.key),
        append=block.append,
        lookupType=history_body(block.keepHistory, block.columnTimeReference),
    )
    return Expansion(body, expected)


def candidate(domain: str, name: str, live: dict[str, Any]) -> dict[str, Any] | None:
    """The staticQuery block of a live query lookup run once."""
    query = (live.get("source") or {}).get("query")
    if not query or live.get("recipeType") != "once":
        return None
    block: dict[str, Any] = {"query": query}
    key = imported_key(live)
    if key:
        block["key"] = key
    is_historic, lookup_type = historic(live)
    if is_historic:
        block["keepHistory"] = True
        if lookup_type.get("instantPolicy") == "column" and lookup_type.get("columnName"):
            block["columnTimeReference"] = lookup_type["columnName"]
    if live.get("append"):
        block["append"] = True
    return block


def check(block: StaticQuerySource) -> Iterator[Finding]:
    """``columnTimeReference`` only makes sense with ``keepHistory: true``."""
    if block.columnTimeReference and not block.keepHistory:
        yield Finding(
            ("columnTimeReference",),
            "columnTimeReference needs keepHistory: true",
            "set keepHistory: true, or remove columnTimeReference",
        )


KIND = SourceKind("staticQuery", "deploy-static-query", StaticQuerySource, expand, candidate, check)
