"""The emulator's ingestion of an uploaded CSV: Devo's checks, its row count and the rows by key.

Its own pass over the bytes (it shares no code with the tool's ``validate``): header, field count,
cell types, duplicate keys, ``skipPreface`` and ``skipEmptyLines``, a UTF-8 byte-order mark. The
first problem fails the job with a line number, as Devo's job messages do.

Two ways through: ``_bulk`` reads the upload whole and checks it column by column, chunk by chunk
(C-level loops: ``map`` over compiled patterns, ``set`` for keys), which is how a 100 MB upload is
taken in seconds; it gives up at the first doubt (a bad cell, a blank line, a preface, a duplicate),
and the exact line-by-line pass then runs from the start and names the line.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import itertools
import operator
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from reconciler.emulator.values import BULK_CHECKS, EXPECTED, cell_ok, key_indexes

#: The longest cell Devo takes (16 MiB). The csv module's own limit (128 KiB) is raised to it, for
#: this process: an emulator serving on its own never imports the tool's validate, which does the
#: same for its reading. The bulk pass, which splits unquoted lines itself, checks their length.
MAX_CELL = 16 * 1024 * 1024
csv.field_size_limit(max(csv.field_size_limit(), MAX_CELL))


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

    try:
        for fields in csv.reader(text()):
            yield where[0], fields
    except csv.Error as exc:  # its words without its hint to programmers ("- do you need ...")
        raise ValueError(f"line {where[0]}: {str(exc).split(' - ')[0]}") from exc


def _blank(fields: list[str], width: int) -> bool:
    return not fields or (fields == [""] and width > 1)


#: Rows checked at a time by the bulk pass (bounded memory: a chunk's rows and their columns).
CHUNK = 100_000


def _column_chunks(data: bytes, source: dict[str, Any], width: int) -> Iterator[list[list[str]]]:
    """The upload's records (header included) as columns, chunk by chunk: split on ``\\n`` as the
    exact pass splits them. Raises ``_Doubt`` where only the exact pass can tell."""
    if b"\x00" in data or source.get("skipPreface"):
        raise _Doubt
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Doubt from None
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    skip_blank = bool(source.get("skipEmptyLines"))
    if '"' in text or "\r" in text:  # quoting (a record may span lines): the csv module reads
        reader = csv.reader(part + "\n" for part in parts)
        try:
            while chunk := list(itertools.islice(reader, CHUNK)):
                yield _as_columns(chunk, width, skip_blank)
        except csv.Error:  # csv's own refusal (a lone CR in a cell): the exact pass says where
            raise _Doubt from None
        return
    # No quoting and no CR: a record is a line and a field what lies between commas. A chunk of
    # lines that all have width - 1 commas (and, for one column, no empty line) is split at once.
    for start in range(0, len(parts), CHUNK):
        lines = parts[start : start + CHUNK]
        if len(text) > MAX_CELL and max(map(len, lines)) > MAX_CELL:
            raise _Doubt  # a cell may be too long: the exact pass names the line, in csv's words
        if set(map(_commas, lines)) == {width - 1} and (width > 1 or "" not in lines):
            flat = ",".join(lines).split(",")
            yield [flat[i::width] for i in range(width)]
        else:
            yield _as_columns(
                [line.split(",") if line else [] for line in lines], width, skip_blank
            )


def _commas(line: str) -> int:
    return line.count(",")


def _as_columns(rows: list[list[str]], width: int, skip_blank: bool) -> list[list[str]]:
    """Records as columns: a blank one is dropped with ``skipEmptyLines``, else (as one of
    another width) a doubt."""
    kept = [r for r in rows if not _blank(r, width)]
    if len(kept) != len(rows) and not skip_blank or set(map(len, kept)) - {width}:
        raise _Doubt
    return [list(map(operator.itemgetter(i), kept)) for i in range(width)]


class _Doubt(Exception):
    """The bulk pass cannot vouch for the upload: the exact pass decides."""


def _bulk(data: bytes, config: dict[str, Any]) -> Ingested:
    """The whole upload checked column by column; raises ``_Doubt`` at the first problem."""
    source = config["recipe"]["source"]
    columns = [(c["name"], str(c["type"]).upper()) for c in source["columns"]]
    names = [name for name, _ in columns]
    keys = key_indexes(names, config["recipe"].get("key") or {"type": "first-column"})
    header = bool(source.get("hasHeader"))
    seen: set[Any] = set()
    rows = 0
    for cells in _column_chunks(data, source, len(columns)):
        if header and cells[0]:
            if [column[0].strip() for column in cells] != names:
                raise _Doubt
            cells, header = [column[1:] for column in cells], False
        for (_, kind), column in zip(columns, cells, strict=True):
            check = BULK_CHECKS.get(kind)
            if check is not None and not check(column):
                raise _Doubt
            if check is None and not all(cell_ok(kind, cell) for cell in column):
                raise _Doubt
        if keys:
            found = (
                cells[keys[0]]
                if len(keys) == 1
                else list(zip(*(cells[i] for i in keys), strict=True))
            )
            before = len(seen)
            seen.update(found)
            if len(seen) != before + len(found):
                raise _Doubt
        rows += len(cells[0])
    if header:
        raise _Doubt  # empty, with a header expected: the exact pass says so
    return Ingested(rows=rows, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def ingest(stream: BinaryIO, config: dict[str, Any]) -> Ingested:
    """Check an upload against its recipe: in bulk, or (at the first doubt) line by line."""
    start = stream.tell()
    try:
        return _bulk(stream.read(), config)
    except _Doubt:
        stream.seek(start)
        return _exact(stream, config)


def _exact(stream: BinaryIO, config: dict[str, Any]) -> Ingested:
    """Check an upload against its recipe line by line, reading it once from the start."""
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
    """An upload's data rows as (key, row) pairs, streamed (after ``ingest`` found no problem).

    Record by record (measured, the column-wise bulk parse is no faster here: the rows are built
    either way); without a preface to skip, the lines come a block at a time (``_block_lines``),
    twice as fast as the numbered, hashed lines ``ingest`` reads."""
    recipe = config["recipe"]
    source = recipe["source"]
    names = [c["name"] for c in source["columns"]]
    keys = key_indexes(names, recipe.get("key") or {"type": "first-column"})
    records: Iterator[list[str]]
    if source.get("skipPreface"):
        records = (fields for _, fields in _records(source, stream, hashlib.sha256(), [0]))
    else:
        records = csv.reader(itertools.chain.from_iterable(_block_lines(stream)))
    return _exact_rows(records, source, names, keys)


#: Bytes decoded at a time by ``_block_lines``.
BLOCK = 1 << 20


def _block_lines(stream: BinaryIO) -> Iterator[list[str]]:
    """The stream's lines, a block's worth at a time, split on ``\n`` only as ``_lines`` splits
    them (a lone ``\r`` stays inside its line), each with its ``\n``."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    rest = ""
    while block := stream.read(BLOCK):
        *lines, rest = (rest + decoder.decode(block)).split("\n")
        yield [line + "\n" for line in lines]
    rest += decoder.decode(b"", final=True)
    if rest:
        yield [rest]


def _exact_rows(
    records: Iterator[list[str]], source: dict[str, Any], names: list[str], keys: list[int]
) -> Iterator[tuple[str, str]]:
    header = bool(source.get("hasHeader"))
    for fields in records:
        if _blank(fields, len(names)):
            continue
        if header:
            header = False
            continue
        row = ",".join(fields)
        yield ("\x1f".join([fields[i] for i in keys]) if keys else row, row)
