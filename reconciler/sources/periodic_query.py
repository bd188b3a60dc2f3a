"""``periodicQuery``: a lookup refreshed from a query. Endpoint ``deploy-periodic-query``."""

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
    default_refresh_ms,
    drop_none,
    duration_text,
    historic,
    history_body,
    imported_key,
    iso_date,
    key_body,
    recipe,
)
from reconciler.timeframe import parse_start_date


class PeriodicQuerySource(Strict):
    """``periodicQuery``: a lookup refreshed from a query every ``refreshPeriod`` → deploy-periodic-query."""

    query: str = Field(min_length=1)
    key: Key | None = None
    refreshPeriod: str | None = None
    startDate: str | int | None = None
    append: bool = False
    keepHistory: bool = False


def schedule(
    query: str, refresh_period: str | None, start_date: str | int | None
) -> tuple[dict[str, Any], set[str]]:
    """The recipe's timing fields of a periodic query kind, and the paths the service decides.

    ``refreshPeriod`` defaults to the query's grouping period (Devo's rule); without a
    ``startDate`` the service picks the request time, and it derives ``requiresDate`` itself.
    """
    refresh = parse_duration_ms(refresh_period) if refresh_period else default_refresh_ms(query)
    start = parse_start_date(start_date) if start_date is not None else None
    ignore = {"recipe.requiresDate"}
    if start is None:
        ignore.add("recipe.startMillis")
    fields = {"refreshMillis": refresh, "startMillis": start, "requiresDate": True}
    return fields, ignore


def expand(block: PeriodicQuerySource, visibility: str, notify_status: bool | None) -> Expansion:
    """The deploy-periodic-query body and the recipe Devo derives from it."""
    body = drop_none(
        {
            "visibility": visibility,
            "query": block.query,
            "key": key_body(block.key) if block.key else None,
            "refreshPeriod": block.refreshPeriod,
            "startDate": block.startDate,
            "append": block.append or None,
            "keepHistory": block.keepHistory or None,
        }
    )
    timing_fields, ignore = schedule(block.query, block.refreshPeriod, block.startDate)
    expected = recipe(
        recipeType="periodic",
        source={"query": block.query},
        key=key_body(block.key),
        append=block.append,
        lookupType=history_body(block.keepHistory, None),
        **timing_fields,
    )
    return Expansion(body, expected, frozenset(ignore))


def timing(live: dict[str, Any]) -> dict[str, Any]:
    """``refreshPeriod`` and ``startDate`` of a live periodic recipe, as the spec writes them."""
    out: dict[str, Any] = {"refreshPeriod": duration_text(int(live["refreshMillis"]))}
    if live.get("startMillis") is not None:
        out["startDate"] = iso_date(int(live["startMillis"]))
    return out


def candidate(domain: str, name: str, live: dict[str, Any]) -> dict[str, Any] | None:
    """The periodicQuery block of a live periodic query lookup without a window."""
    query = (live.get("source") or {}).get("query")
    if not query or live.get("recipeType") != "periodic" or not live.get("refreshMillis"):
        return None
    if live.get("windowMillis"):
        return None
    key = imported_key(live)
    block: dict[str, Any] = {"query": query, **({"key": key} if key else {}), **timing(live)}
    if live.get("append"):
        block["append"] = True
    if historic(live)[0]:
        block["keepHistory"] = True
    return block


def check(block: PeriodicQuerySource) -> Iterator[Finding]:
    """``refreshPeriod`` at least a minute, ``startDate`` a date."""
    yield from check_duration(("refreshPeriod",), block.refreshPeriod, MIN_REFRESH_MS)
    yield from check_start_date(block.startDate)


KIND = SourceKind(
    "periodicQuery", "deploy-periodic-query", PeriodicQuerySource, expand, candidate, check
)
