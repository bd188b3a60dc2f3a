"""The emulator's ingestion of an uploaded CSV: Devo's checks, its row count and the rows by key.

Its own pass over the bytes (it shares no code with the tool's ``validate``): header, field count,
cell types, duplicate keys, ``skipPreface`` and ``skipEmptyLines``, a UTF-8 byte-order mark. The
first problem fails the job with a line number, as Devo's job messages do.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from reconciler.emulator.values import EXPECTED, cell_ok, key_indexes


@dataclass
class Ingested:
    """What an upload held: its data rows, bytes and sha256, and the first problem (or None)."""

    rows: int = 0
    size: int = 0
    sha256: str = ""
    problem: str | None = None


def _lines(stream: BinaryIO, digest: Any, counter: list[int]) -> Iterator[tuple[int, str]]:
    """(physical line number, text) of each line, hashing and counting bytes on the way."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    for number, raw in enumerate(stream, start=1):
        digest.update(raw)
        counter[0] += len(raw)
        if b"\x00" in raw:
            raise ValueError(f"line {number}: a NUL byte")
        try:
            yield number, decoder.decode(raw)
        except UnicodeDecodeError:
            raise ValueError(f"line {number}: not UTF-8") from None


def _records(source: dict[str, Any], stream: BinaryIO, digest: Any, counter: list[int]) -> Any:
    """(line, fields) of each CSV record after the preface lines."""
    preface = re.compile(source["skipPreface"]) if source.get("skipPreface") else None
    numbered = _lines(stream, digest, counter)
    where: list[int] = [0]

    def text() -> Iterator[str]:
        skipping = preface is not None
        for number, line in numbered:
            if skipping and preface is not None and preface.search(line.rstrip("\r\n")):
                continue
            skipping = False
            where[0] = number
            yield line

    for fields in csv.reader(text()):
        yield where[0], fields


def _blank(fields: list[str], width: int) -> bool:
    return not fields or (fields == [""] and width > 1)


def ingest(stream: BinaryIO, config: dict[str, Any]) -> Ingested:
    """Check an upload against its recipe, reading it once from the start."""
    recipe = config["recipe"]
    source = recipe["source"]
    columns = [(c["name"], c["type"]) for c in source["columns"]]
    names = [name for name, _ in columns]
    keys = key_indexes(names, recipe.get("key") or {"type": "first-column"})
    digest, counter = hashlib.sha256(), [0]
    result = Ingested()
    header = bool(source.get("hasHeader"))
    seen: set[tuple[str, ...]] = set()
    try:
        for line, fields in _records(source, stream, digest, counter):
            if result.problem is not None:
                continue  # keep reading: the size and the hash cover the whole upload
            if _blank(fields, len(columns)):
                if not source.get("skipEmptyLines"):
                    result.problem = f"line {line}: empty line"
                continue
            if header:
                header = False
                if [f.strip() for f in fields] != names:
                    result.problem = f"line {line}: header {fields} is not {names}"
                continue
            result.rows += 1
            if len(fields) != len(columns):
                result.problem = f"line {line}: {len(fields)} fields, expected {len(columns)}"
                continue
            for (name, kind), cell in zip(columns, fields, strict=True):
                if not cell_ok(kind, cell):
                    result.problem = (
                        f"line {line}: column {name!r}: {cell[:40]!r} is not "
                        f"{EXPECTED.get(kind.upper(), kind)}"
                    )
                    break
            if keys:
                key = tuple(fields[i] for i in keys)
                if key in seen:
                    result.problem = f"line {line}: duplicate key {', '.join(key)[:60]!r}"
                seen.add(key)
    except (ValueError, csv.Error) as exc:
        result.problem = str(exc)
        for raw in stream:
            digest.update(raw)
            counter[0] += len(raw)
    if header and result.problem is None:
        result.problem = "line 1: the file is empty, but hasHeader is true"
    result.size, result.sha256 = counter[0], digest.hexdigest()
    return result


def read_rows(stream: BinaryIO, config: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """An upload's data rows as (key, row) pairs, streamed (after ``ingest`` found no problem)."""
    recipe = config["recipe"]
    source = recipe["source"]
    names = [c["name"] for c in source["columns"]]
    keys = key_indexes(names, recipe.get("key") or {"type": "first-column"})
    header = bool(source.get("hasHeader"))
    for _, fields in _records(source, stream, hashlib.sha256(), [0]):
        if _blank(fields, len(names)):
            continue
        if header:
            header = False
            continue
        row = ",".join(fields)
        yield ("\x1f".join(fields[i] for i in keys) if keys else row, row)
