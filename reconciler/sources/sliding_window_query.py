"""``slidingWindowQuery``: a query over the last ``windowSize``. Endpoint ``deploy-sliding-window-query``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from reconciler.coltypes import parse_duration_ms
from reconciler.sources._shared import (
    Expansion,
    Key,
    SourceKind,
    Strict,
    default_refresh_ms,
    drop_none,
    duration_text,
    imported_key,
    key_body,
    recipe,
)
from reconciler.sources.periodic_query import timing
from reconciler.timeframe import parse_start_date


class SlidingWindowQuerySource(Strict):
    """``slidingWindowQuery``: a query over the last ``windowSize`` → deploy-sliding-window-query."""

    query: str = Field(min_length=1)
    key: Key | None = None
    windowSize: str
    refreshPeriod: str | None = None
    startDate: str | int | None = None


def expand(
    block: SlidingWindowQuerySource, visibility: str, notify_status: bool | None
) -> Expansion:
    """The deploy-sliding-window-query body and the recipe Devo derives from it."""
    body = drop_none(
        {
            "visibility": visibility,
            "query": block.query,
            "key": key_body(block.key) if block.key else None,
            "windowSize": block.windowSize,
            "refreshPeriod": block.refreshPeriod,
            "startDate": block.startDate,
        }
    )
    start = parse_start_date(block.startDate) if block.startDate is not None else None
    expected = recipe(
        recipeType="periodic",
        source={"query": block.query},
        key=key_body(block.key),
        refreshMillis=parse_duration_ms(block.refreshPeriod)
        if block.refreshPeriod
        else default_refresh_ms(block.query),
        startMillis=start,
        requiresDate=True,
        windowMillis=parse_duration_ms(block.windowSize),
    )
    ignore = {"recipe.requiresDate"}
    if start is None:
        ignore.add("recipe.startMillis")
    return Expansion(body, expected, frozenset(ignore))


def candidate(domain: str, name: str, live: dict[str, Any]) -> dict[str, Any] | None:
    """The slidingWindowQuery block of a live periodic query lookup with a window."""
    query = (live.get("source") or {}).get("query")
    if not query or live.get("recipeType") != "periodic" or not live.get("refreshMillis"):
        return None
    if not live.get("windowMillis"):
        return None
    key = imported_key(live)
    return {
        "query": query,
        **({"key": key} if key else {}),
        "windowSize": duration_text(int(live["windowMillis"])),
        **timing(live),
    }


KIND = SourceKind(
    "slidingWindowQuery",
    "deploy-sliding-window-query",
    SlidingWindowQuerySource,
    expand,
    candidate,
)
