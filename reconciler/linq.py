"""What the tool reads of a LINQ query: the names of the columns it produces.

Used by validation (a key must be one of the query's columns) and by the plan (the ``fields`` a query
lookup should report). Only what can be read for certain is returned; anything else is None.
"""

from __future__ import annotations

import re

_CLAUSE_RE = re.compile(r"\b(select|where|group\s+by|every|from|order\s+by|limit)\b", re.I)
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def query_columns(query: str) -> list[str] | None:
    """The column names a LINQ query's ``select``/``group by`` lists produce, when they can be read.

    Returns None when any expression has no readable name (the caller then skips the check).
    """
    parts = _CLAUSE_RE.split(query)
    names: list[str] = []
    saw_select = False
    for i in range(1, len(parts) - 1, 2):
        clause = re.sub(r"\s+", " ", parts[i].lower())
        body = parts[i + 1]
        if clause not in ("select", "group by"):
            continue
        saw_select = saw_select or clause == "select"
        for expr in _split_top_level(body):
            expr = expr.strip()
            if not expr:
                continue
            alias = re.search(r"\bas\s+([A-Za-z_][A-Za-z0-9_]*)\s*$", expr, re.I)
            if alias:
                names.append(alias.group(1))
            elif _IDENT_RE.match(expr):
                names.append(expr)
            elif expr == "*":
                return None
            else:
                return None
    return names if saw_select else None


def _split_top_level(text: str) -> list[str]:
    depth, start, out = 0, 0, []
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return out
