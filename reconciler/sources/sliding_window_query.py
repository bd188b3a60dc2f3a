"""``slidingWindowQuery``: a query over the last ``windowSize``. Endpoint ``deploy-sliding-window-query``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field

from reconciler.coltypes import parse_duration_ms
from reconciler.sources._shared import (
    MIN_REFRESH_MS,
    Expansion,
    Finding,
    Key,
    SourceKind,
    Strict,
    check_duration,
    check_start_date,
    drop_none,
    duration_text,
    imported_key,
    key_body,
    recipe,
)
from reconciler.sources.periodic_query import schedule, timing


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
    timing_fields, ignore = schedule(block.query, block.refreshPeriod, block.startDate)
    expected = recipe(
        recipeType="periodic",
        source={"query": block.query},
        key=key_body(block.key),
        windowMillis=parse_duration_ms(block.windowSize),
        **timing_fields,
    )
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


def check(block: SlidingWindowQuerySource) -> Iterator[Finding]:
    """``refreshPeriod`` at least a minute, ``windowSize`` a duration, ``startDate`` a date."""
    yield from check_duration(("refreshPeriod",), block.refreshPeriod, MIN_REFRESH_MS)
    yield from check_duration(("windowSize",), block.windowSize, 1)
    yield from check_start_date(block.startDate)


KIND = SourceKind(
    "slidingWindowQuery",
    "deploy-sliding-window-query",
    SlidingWindowQuerySource,
    expand,
    candidate,
    check,
)
