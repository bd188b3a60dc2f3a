"""Habits of a less tidy Lookups API: how a real service may echo what it was sent.

The emulator stores the deploy config it derived and, by default, echoes it back verbatim. Devo's own
service does not (``shared/lookup-api.md``, "Echoes are not verbatim"), and a plan that only works
against a verbatim echo would show an update forever against the real one. Each knob of
``EmulatorConfig`` below turns on one habit, applied to every config the emulator shows (the 201's
``lookupDeployConfig``, and ``deployConfig`` in list and get answers), never to what it stores:

* ``rewrite_queries``: the query comes back rewritten the way a captured Devo 201 showed it: a
  ``where eq(client, "<domain>")`` right after ``from <table>``, every ``where`` condition wrapped in
  parentheses, and ``select a, b`` split into ``select a select (b)``. Deterministic, so the same
  query always echoes the same text.
* ``columns_with_from``: every column carries its ``from`` index.
* ``empty_for_null``: null lists and strings come back as ``[]`` and ``""``.
* ``numbers_as_strings``: numbers (``refreshMillis``, ``numEntries``...) come back as strings.

(``jobs_vanish`` is a habit of the job routes, not of echoes: see ``app.get_job``.)
"""

from __future__ import annotations

import copy
import re
from typing import Any

from reconciler.emulator.values import list_items

_FROM = re.compile(r"^(\s*from\s+\S+)", re.IGNORECASE)
_CLAUSE = re.compile(r"\b(where|group\s+by|every|select|order\s+by|limit)\b", re.IGNORECASE)
_EMPTY_LIST_PATHS = ("columnFilter",)
_EMPTY_TEXT_PATHS = ("skipPreface",)
_NUMBERS = ("refreshMillis", "startMillis", "windowMillis")


def rewrite_query(query: str, domain: str) -> str:
    """The query as the service echoes it (see the module docstring)."""
    head = _FROM.match(query)
    if head is None:
        return query
    rest = query[head.end() :]
    parts = _CLAUSE.split(rest)
    out = [head.group(1), f' where eq(client, "{domain}")']
    out.append(parts[0].rstrip())
    for i in range(1, len(parts) - 1, 2):
        clause = re.sub(r"\s+", " ", parts[i].lower())
        body = parts[i + 1].strip()
        if clause == "where":
            out.append(f" where ({body})")
        elif clause == "select":
            items = list_items(body)
            if items:
                out.append(f" select {items[0]}")
                out.extend(f" select ({item})" for item in items[1:])
        else:
            out.append(f" {clause} {body}")
    return "".join(out).strip()


def echo_config(config: dict[str, Any], domain: str, knobs: Any) -> dict[str, Any]:
    """The config as this service shows it, given the habits switched on in ``knobs``."""
    if not (
        knobs.rewrite_queries
        or knobs.columns_with_from
        or knobs.empty_for_null
        or knobs.numbers_as_strings
    ):
        return config
    shown = copy.deepcopy(config)
    recipe = shown.get("recipe") or {}
    source = recipe.get("source") or {}
    if knobs.rewrite_queries and isinstance(source.get("query"), str):
        source["query"] = rewrite_query(source["query"], domain)
    if knobs.columns_with_from and isinstance(source.get("columns"), list):
        for i, column in enumerate(source["columns"]):
            column.setdefault("from", i)
    if knobs.empty_for_null:
        for name in _EMPTY_LIST_PATHS:
            if recipe.get(name) is None:
                recipe[name] = []
        for name in _EMPTY_TEXT_PATHS:
            if source.get(name) is None and "columns" in source:
                source[name] = ""
    if knobs.numbers_as_strings:
        for name in _NUMBERS:
            if isinstance(recipe.get(name), int):
                recipe[name] = str(recipe[name])
        for column in source.get("columns") or []:
            if isinstance(column.get("from"), int):
                column["from"] = str(column["from"])
    return shown


def echo_metadata(meta: dict[str, Any], knobs: Any) -> dict[str, Any]:
    """A metadata item as this service shows it (numbers as strings, when that habit is on)."""
    if knobs.numbers_as_strings:
        for name in ("numEntries", "fileSize"):
            if isinstance(meta.get(name), int):
                meta[name] = str(meta[name])
    return meta
