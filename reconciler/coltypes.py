"""Devo column types: their names in deploy bodies, in metadata ``fields``, and how cells parse.

Deploy bodies use upper-case names (``STRING``, ``INT4``...); lookup metadata reports lower-case short
names (``str``, ``int4``...). Both the local CSV check (``reconciler validate``) and the emulator's
ingestion use ``parse_cell``, so a CSV that validates here is one the emulator accepts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from datetime import datetime
from typing import Literal, get_args

ColumnType = Literal[
    "BOOLEAN",
    "STRING",
    "INT4",
    "INT8",
    "FLOAT4",
    "FLOAT8",
    "HEX4",
    "HEX8",
    "IP4",
    "IP6",
    "TIMESTAMP",
    "DURATION",
]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)

#: deploy-body type -> the short name metadata ``fields[].type`` uses.
FIELD_TYPE_NAMES: dict[str, str] = {
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

# Other spellings an independent service may use in ``fields[].type``.
_FIELD_ALIASES = {"string": "str", "boolean": "bool", "integer": "int4", "long": "int8"}


def field_type_name(value: str) -> str:
    """Normalise a metadata or deploy type name to the lower-case short form (``str``, ``int4``)."""
    upper = value.strip().upper()
    if upper in FIELD_TYPE_NAMES:
        return FIELD_TYPE_NAMES[upper]
    lower = value.strip().lower()
    return _FIELD_ALIASES.get(lower, lower)


_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """Parse a Devo duration (``5m``, ``1h30m``, ``250ms``, ``1d``) into milliseconds.

    Raises ``ValueError`` when the text is not a duration.
    """
    compact = text.strip().replace(" ", "")
    if not compact:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _DURATION_PART_RE.finditer(compact):
        if match.start() != pos:
            raise ValueError(f"{text!r} is not a duration")
        total += float(match.group(1)) * _UNIT_MS[match.group(2)]
        pos = match.end()
    if pos != len(compact):
        raise ValueError(f"{text!r} is not a duration (use e.g. 30s, 5m, 1h, 1d)")
    return int(total)


# The accepted forms, ASCII only: Python's int()/float() would also take ``1_000``, ``+7``,
# Arabic-Indic digits, ``nan`` and ``infinity``, none of which a Devo column type documents.
_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS_RE = re.compile(r"[0-9]+")
_TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
)


def _parse_bool(cell: str) -> None:
    if cell.strip().lower() not in ("true", "false", "1", "0"):
        raise ValueError("expected true or false")


def _int_parser(bits: int) -> Callable[[str], None]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def parse(cell: str) -> None:
        text = cell.strip()
        if not _INT_RE.fullmatch(text):
            raise ValueError("expected an integer (digits 0-9, an optional leading -)")
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"integer out of range for INT{bits // 8} ({low}..{high})")

    return parse


def _float_parser(name: str) -> Callable[[str], None]:
    def parse(cell: str) -> None:
        if not _FLOAT_RE.fullmatch(cell.strip()):
            raise ValueError(f"expected a number ({name}: e.g. -1.5, 2, 3e-4)")

    return parse


def _hex_parser(digits: int) -> Callable[[str], None]:
    def parse(cell: str) -> None:
        text = cell.strip().lower()
        if text.startswith("0x"):
            text = text[2:]
        if not text or len(text) > digits or any(c not in "0123456789abcdef" for c in text):
            raise ValueError(f"expected at most {digits} hexadecimal digits")

    return parse


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# What ``ipaddress.IPv4Address`` accepts (four decimal octets, no leading zeros), read by one
# regular expression: seven times faster, and IP columns fill the biggest CSVs.
# (``tests/test_spec.py`` holds the two to the same answers.)
_IP4_RE = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def _parse_ip4(cell: str) -> None:
    if not _IP4_RE.fullmatch(cell.strip()):
        raise ValueError("expected an IPv4 address")


def _parse_ip6(cell: str) -> None:
    try:
        ipaddress.IPv6Address(cell.strip())
    except ValueError:
        raise ValueError("expected an IPv6 address") from None


def _parse_timestamp(cell: str) -> None:
    text = cell.strip()
    if _DIGITS_RE.fullmatch(text):
        return  # epoch milliseconds
    try:
        if not _TIMESTAMP_RE.fullmatch(text):
            raise ValueError
        datetime.fromisoformat(text)  # a real date: no 2026-02-30
    except ValueError:
        raise ValueError(
            "expected a timestamp (epoch milliseconds, or ISO-8601 like 2026-01-31T10:00:00Z)"
        ) from None


def _parse_duration(cell: str) -> None:
    text = cell.strip()
    if _DIGITS_RE.fullmatch(text):
        return
    parse_duration_ms(text)


def _parse_string(cell: str) -> None:
    return None


PARSERS: dict[str, Callable[[str], None]] = {
    "BOOLEAN": _parse_bool,
    "STRING": _parse_string,
    "INT4": _int_parser(32),
    "INT8": _int_parser(64),
    "FLOAT4": _float_parser("FLOAT4"),
    "FLOAT8": _float_parser("FLOAT8"),
    "HEX4": _hex_parser(8),
    "HEX8": _hex_parser(16),
    "IP4": _parse_ip4,
    "IP6": _parse_ip6,
    "TIMESTAMP": _parse_timestamp,
    "DURATION": _parse_duration,
}


def cell_parser(column_type: str) -> Callable[[str], None]:
    """The check of one non-empty cell of ``column_type``, for loops over many cells: looked up
    once, it raises ``ValueError`` saying why a cell is not a value of the type."""
    return PARSERS[column_type.upper()]


def parse_cell(column_type: str, cell: str) -> None:
    """Check that ``cell`` is a value of ``column_type``; raise ``ValueError`` saying why not.

    An empty cell is a null and always accepted.
    """
    if cell == "":
        return
    cell_parser(column_type)(cell)
