"""The emulator's own reading of values: column types, cells, durations, dates, query columns, keys.

Written apart from the tool's parsing on purpose (the emulator is the suite's stand-in for a service
nobody here wrote): it follows the same documented forms (README, "Cell values") by other means,
so a parsing bug on the tool's side shows up as a disagreement in tests instead of being shared.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

#: Devo's column types (deploy bodies) → the short names lookup metadata reports in ``fields``.
TYPES: dict[str, str] = {
    "BOOLEAN": "bool",
    "STRING": "str",
    "INT4": "int4",
    "INT8": "int8",
    "FLOAT4": "float4",
    "FLOAT8": "float8",
    "HEX4": "hex4",
    "HEX8": "hex8",
    "IP4": "ip4",
    "IP6": "ip6",
    "TIMESTAMP": "timestamp",
    "DURATION": "duration",
}

_UNITS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def duration_ms(text: str) -> int:
    """``1h30m`` → 5400000; ``ValueError`` for anything else."""
    compact = "".join(text.split())
    if not _DURATION.fullmatch(compact):
        raise ValueError(f"{text!r} is not a duration")
    return int(sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(compact)))


def iso_millis(text: str) -> int:
    """An ISO-8601 date (``Z`` or an offset; naive = UTC) → epoch milliseconds, exactly."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


# --- cells -------------------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IP4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_HEX = re.compile(r"(?:0[xX])?([0-9a-fA-F]+)")
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[-+]\d{2}:?\d{2})?)?",
    re.ASCII,
)


def _ip6(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        return False
    return text.isascii()


def _timestamp(text: str) -> bool:
    if text.isascii() and text.isdigit():
        return True
    if not _DATE.fullmatch(text):
        return False
    try:
        iso_millis(text)
    except ValueError:
        return False
    return True


def _duration(text: str) -> bool:
    if text.isascii() and text.isdigit():
        return True
    try:
        duration_ms(text)
    except ValueError:
        return False
    return text.isascii()


def _integer(text: str, bits: int) -> bool:
    return bool(_INTEGER.fullmatch(text)) and -(2 ** (bits - 1)) <= int(text) < 2 ** (bits - 1)


def _hex(text: str, digits: int) -> bool:
    match = _HEX.fullmatch(text)
    return bool(match) and len(match.group(1)) <= digits if match else False


_CHECKS = {
    "BOOLEAN": lambda t: t.lower() in ("true", "false", "1", "0"),
    "STRING": lambda t: True,
    "INT4": lambda t: _integer(t, 32),
    "INT8": lambda t: _integer(t, 64),
    "FLOAT4": lambda t: bool(_NUMBER.fullmatch(t)),
    "FLOAT8": lambda t: bool(_NUMBER.fullmatch(t)),
    "HEX4": lambda t: _hex(t, 8),
    "HEX8": lambda t: _hex(t, 16),
    "IP4": lambda t: bool(_IP4.fullmatch(t)),
    "IP6": _ip6,
    "TIMESTAMP": _timestamp,
    "DURATION": _duration,
}


def _all_match(pattern: re.Pattern[str]) -> Callable[[Sequence[str]], bool]:
    """True when every cell, stripped, matches ``pattern`` (an empty cell is a null, but this
    fast check leaves it to the exact one: ``False``)."""
    return lambda cells: all(map(pattern.fullmatch, map(str.strip, cells)))


def _all_integers(bits: int) -> Callable[[Sequence[str]], bool]:
    def check(cells: Sequence[str]) -> bool:
        stripped = list(map(str.strip, cells))
        if not all(map(_INTEGER.fullmatch, stripped)):
            return False
        values = list(map(int, stripped))
        return not values or (-(2 ** (bits - 1)) <= min(values) and max(values) < 2 ** (bits - 1))

    return check


#: Whole-column checks for the upload's bulk pass: True only when every cell passes ``cell_ok``
#: (a False sends the upload to the exact pass, which names the line). Types not here are checked
#: cell by cell.
BULK_CHECKS: dict[str, Callable[[Sequence[str]], bool]] = {
    "STRING": lambda cells: True,
    "INT4": _all_integers(32),
    "INT8": _all_integers(64),
    "FLOAT4": _all_match(_NUMBER),
    "FLOAT8": _all_match(_NUMBER),
    "IP4": _all_match(_IP4),
    "BOOLEAN": lambda cells: {c.strip().lower() for c in cells} <= {"true", "false", "1", "0"},
}


#: How Devo's job messages name each type's values.
EXPECTED = {
    "BOOLEAN": "true or false",
    "STRING": "a string",
    "INT4": "a 32-bit integer",
    "INT8": "a 64-bit integer",
    "FLOAT4": "a number",
    "FLOAT8": "a number",
    "HEX4": "up to 8 hexadecimal digits",
    "HEX8": "up to 16 hexadecimal digits",
    "IP4": "an IPv4 address",
    "IP6": "an IPv6 address",
    "TIMESTAMP": "a timestamp",
    "DURATION": "a duration",
}


def cell_ok(column_type: str, cell: str) -> bool:
    """True when ``cell`` is a value of ``column_type`` (an empty cell is a null: always)."""
    text = cell.strip()
    return cell == "" or bool(_CHECKS[column_type.upper()](text))


# --- queries and keys --------------------------------------------------------------------------

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CLAUSES = ("select", "where", "group", "every", "from", "order", "limit")


def _outside(text: str) -> set[int]:
    """Positions of the characters outside quotes and parentheses."""
    found: set[int] = set()
    depth, quote = 0, ""
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0:
            found.add(i)
    return found


def _top_level(query: str) -> list[tuple[int, str]]:
    """(position, lower-case word) of each word outside quotes and parentheses."""
    outside = _outside(query)
    return [(m.start(), m.group().lower()) for m in _WORD.finditer(query) if m.start() in outside]


def list_items(text: str) -> list[str]:
    """The comma-separated items of a select or group-by list, split outside quotes and parentheses."""
    outside = _outside(text)
    cuts = [-1, *(i for i, ch in enumerate(text) if ch == "," and i in outside), len(text)]
    items = (text[a + 1 : b].strip() for a, b in zip(cuts, cuts[1:], strict=False))
    return [item for item in items if item]


def query_columns(query: str) -> list[str]:
    """The columns a query's ``group by`` and ``select`` lists name (none when one is unreadable)."""
    words = _top_level(query)
    clauses: list[tuple[str, int, int]] = []  # (clause, start of its list, start of the keyword)
    for n, (pos, word) in enumerate(words):
        if word not in _CLAUSES:
            continue
        if word in ("group", "order"):
            if n + 1 >= len(words) or words[n + 1][1] != "by":
                continue
            clauses.append((word, words[n + 1][0] + 2, pos))
        else:
            clauses.append((word, pos + len(word), pos))
    names: list[str] = []
    selected = False
    for n, (clause, start, _) in enumerate(clauses):
        end = clauses[n + 1][2] if n + 1 < len(clauses) else len(query)
        if clause not in ("select", "group"):
            continue
        selected = selected or clause == "select"
        for item in list_items(query[start:end]):
            alias = re.search(r"\s[aA][sS]\s+([A-Za-z_][A-Za-z0-9_]*)$", item)
            if alias:
                names.append(alias.group(1))
            elif _WORD.fullmatch(item):
                names.append(item)
            else:
                return []
    return names if selected else []


def key_indexes(names: list[str], key: dict[str, Any]) -> list[int]:
    """The positions of the key's columns among ``names`` (empty for row-hash and seq keys)."""
    kind = key.get("type", "first-column")
    if kind == "first-column":
        return [0]
    wanted = [str(key.get("column"))] if kind == "column" else list(key.get("columns") or [])
    if kind not in ("column", "col-hash") or not all(w in names for w in wanted):
        return []
    return [names.index(w) for w in wanted]


# The service's own reading of the lookups a query reads (independent of the tool's, on purpose):
# ``lu("name", ...)`` and the back-quoted `` `lu/name/column` ``, outside comments.
_LOOKUP_USE = re.compile(r"""\blu\s*\(\s*"((?:[^"\\]|\\.)*)"|`lu/([^/`]+)/""")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)


def lookups_read(query: str) -> list[str]:
    """The names of the lookups a query reads by literal name (a computed name is not read)."""
    names: dict[str, None] = {}
    for match in _LOOKUP_USE.finditer(_COMMENT.sub(" ", query)):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        names.setdefault(re.sub(r"\\(.)", r"\1", name))
    return list(names)
