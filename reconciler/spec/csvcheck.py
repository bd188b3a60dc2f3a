"""Streaming checks of CSV files against their declared columns.

``scan_csv`` reads a CSV once, in bounded memory (a 200 MB file never sits in memory, and duplicate
keys are tracked by 64-bit digests that spill to a temporary SQLite table past a million keys). It
hashes the bytes as it goes, counts data rows, and reports the first errors with their CSV line
numbers plus a count of the rest. ``validate`` uses it for ``csv.file`` specs; the emulator uses it
to ingest uploads, so both agree on what a valid CSV is.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from reconciler.coltypes import cell_parser
from reconciler.errors import Diagnostic
from reconciler.sources.csv import CsvSource, key_columns

if TYPE_CHECKING:
    from reconciler.spec.loader import LoadedLookup

MAX_REPORTED = 10
_SPILL_AT = 1_000_000
#: The largest cell the Lookups API takes (a field of 16 MiB); the csv module refuses longer.
MAX_CELL_BYTES = 16 * 1024 * 1024
csv.field_size_limit(MAX_CELL_BYTES)


@dataclass
class CsvScan:
    """What one pass over a CSV found."""

    rows: int = 0
    sha256: str = ""
    size: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    error_count: int = 0
    header: list[str] | None = None
    bom: bool = False  # the file starts with a UTF-8 byte order mark (apply uploads it without)

    def error(self, line: int, message: str) -> None:
        """Record an error; only the first ``MAX_REPORTED`` keep their text."""
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append((line, message))

    @property
    def ok(self) -> bool:
        """No errors at all."""
        return self.error_count == 0


class _KeySet:
    """Set of row keys by 64-bit digest; moves to an on-disk SQLite table when it grows large."""

    def __init__(self) -> None:
        self._memory: set[int] = set()
        self._db: sqlite3.Connection | None = None

    def add(self, key: tuple[str, ...]) -> bool:
        """Add ``key``; False when it was already there."""
        digest = hashlib.blake2b("\x1f".join(key).encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "big", signed=True)
        if self._db is None:
            if value in self._memory:
                return False
            self._memory.add(value)
            if len(self._memory) > _SPILL_AT:
                self._spill()
            return True
        try:
            self._db.execute("INSERT INTO k VALUES (?)", (value,))
        except sqlite3.IntegrityError:
            return False
        return True

    def _spill(self) -> None:
        self._db = sqlite3.connect("")  # "" = a private temporary database on disk
        self._db.execute("CREATE TABLE k (v INTEGER PRIMARY KEY)")
        self._db.executemany("INSERT INTO k VALUES (?)", ((v,) for v in self._memory))
        self._memory = set()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


class _HashingReader(io.RawIOBase):
    """A raw reader that hashes and counts every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        self.sha256.update(data)
        self.size += n
        return n


UTF8_BOM = b"\xef\xbb\xbf"


def abridged(items: Sequence[str], most: int = 12, width: int = 40) -> str:
    """A list for a message: at most ``most`` items of at most ``width`` characters, and how
    many more (a header of a million columns must not make a 10 MB error line)."""
    shown = [item if len(item) <= width else item[:width] + "..." for item in items[:most]]
    more = f", ... ({len(items) - most} more)" if len(items) > most else ""
    return "[" + ", ".join(repr(item) for item in shown) + more + "]"


def scan_csv(
    stream: BinaryIO,
    columns: Sequence[tuple[str, str]],
    *,
    has_header: bool = False,
    skip_empty_lines: bool = False,
    skip_preface: str | None = None,
    key_columns: Sequence[int] | None = None,
) -> CsvScan:
    """Check a CSV stream against ``columns`` (name, Devo type) in one bounded-memory pass."""
    scan = CsvScan()
    hashing = _HashingReader(stream)
    preface = re.compile(skip_preface) if skip_preface else None
    keys = _KeySet() if key_columns else None
    lines = _Lines(io.BufferedReader(hashing, 1 << 16), preface)
    reader = csv.reader(lines)
    expect_header = has_header
    width = len(columns)
    # Each column's check, looked up once rather than per cell (this loop runs for every cell
    # of files without the big extra); a STRING cell needs none.
    checks = [
        (index, name, cell_parser(column_type))
        for index, (name, column_type) in enumerate(columns)
        if column_type.upper() != "STRING"
    ]
    rows = 0

    def here() -> int:  # the CSV line of the current row (asked only to report an error)
        return reader.line_num + lines.skipped

    try:
        for row in reader:
            if not row or (width > 1 and len(row) == 1 and row[0] == ""):
                if not skip_empty_lines:
                    scan.error(here(), "empty line (set skipEmptyLines: true to allow them)")
                continue
            if expect_header:
                expect_header = False
                scan.header = row
                names = [name for name, _ in columns]
                if [h.strip() for h in row] != names:
                    scan.error(
                        here(),
                        f"header {abridged(row)} does not match the declared columns "
                        f"{abridged(names)}",
                    )
                continue
            rows += 1
            if len(row) != width:
                scan.error(here(), f"{len(row)} fields, expected {width}")
                continue
            for index, name, parse in checks:
                cell = row[index]
                if cell:  # an empty cell is a null, of any type
                    try:
                        parse(cell)
                    except ValueError as exc:
                        scan.error(here(), f"column {name!r}: {cell[:40]!r}: {exc}")
            if keys is not None and key_columns is not None:
                key = tuple(row[i] for i in key_columns)
                if not keys.add(key):
                    scan.error(here(), f"duplicate key {', '.join(key)[:60]!r}")
    except _BadLine as exc:
        scan.error(exc.line, str(exc))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            scan.error(
                lines.physical,
                f"a cell is larger than {MAX_CELL_BYTES // (1024 * 1024)} MiB, the most Devo "
                "accepts in one field",
            )
        elif "new-line character seen in unquoted field" in str(exc):
            scan.error(
                lines.physical,
                "unreadable CSV: a carriage return inside an unquoted cell (quote the cell, or "
                "end the line with CRLF or LF)",
            )
        else:
            scan.error(lines.physical, f"unreadable CSV: {exc}")
    finally:
        scan.rows = rows
        if keys is not None:
            keys.close()
    if expect_header and not scan.errors:
        scan.error(1, "the file is empty, but hasHeader: true expects a header line")
    scan.bom = lines.bom
    # Finish reading so the hash covers the whole file even after an early stop.
    while hashing.read(1 << 16):
        pass
    scan.sha256 = hashing.sha256.hexdigest()
    scan.size = hashing.size
    return scan


class _BadLine(Exception):
    """A physical line that cannot be read as CSV text (not UTF-8, or a NUL byte)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


class _Lines:
    """Decodes a binary stream line by line (so errors have exact line numbers), refuses NUL bytes,
    and drops the leading lines that match ``skipPreface``; counts what it dropped."""

    def __init__(self, raw: io.BufferedReader, preface: re.Pattern[str] | None) -> None:
        self._raw = raw
        self._preface = preface
        self.skipped = 0
        self.physical = 0
        self.bom = False

    def __iter__(self) -> Iterator[str]:
        skipping = self._preface is not None
        for data in self._raw:
            self.physical += 1
            if b"\x00" in data:
                raise _BadLine(self.physical, "unreadable CSV: a NUL byte")
            if self.physical == 1 and data.startswith(UTF8_BOM):
                # Excel writes one; apply uploads the file without it (see client.deploy).
                data = data[len(UTF8_BOM) :]
                self.bom = True
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _BadLine(self.physical, "bytes that are not UTF-8") from None
            if skipping and self._preface is not None and self._preface.search(line.rstrip("\r\n")):
                self.skipped += 1
                continue
            skipping = False
            yield line


def csv_rows(
    lines: Iterable[str], source: CsvSource
) -> tuple[list[str] | None, Iterator[tuple[int, list[str]]]]:
    """A valid CSV's header (when it has one) and its data rows as (line, row), read as the
    scanner reads them: leading ``skipPreface`` lines dropped, blank rows skipped. For the work
    done on files already checked (row diffs, overlay patches); rows are read lazily."""
    preface = re.compile(source.skipPreface) if source.skipPreface else None
    remaining = iter(lines)
    dropped = 0
    first: list[str] = []
    for line in remaining:
        if preface is not None and preface.search(line.rstrip("\r\n")):
            dropped += 1
            continue
        first.append(line)
        break
    reader = csv.reader(itertools.chain(first, remaining))

    def records() -> Iterator[tuple[int, list[str]]]:
        for row in reader:
            if row and row != [""]:
                yield dropped + reader.line_num, row

    rows = records()
    header = None
    if source.hasHeader:
        found = next(rows, None)
        header = found[1] if found is not None else None
    return header, rows


#: What shows a long scan (the command line's spinner on a terminal): called with the file and its
#: size, it gives the context manager the scan runs in. Files under PROGRESS_MIN_BYTES go unshown.
ScanProgress = Callable[[Path, int], AbstractContextManager[object]]
PROGRESS_MIN_BYTES = 32 * 1024 * 1024


def scan_spec_csv(
    lookup: LoadedLookup, path: Path, progress: ScanProgress | None = None
) -> CsvScan:
    """Scan the ``csv.file`` of ``lookup`` with its declared columns and options.

    Big files go to the columnar engine first (``csvengine``), which answers only "valid"; any
    file it does not vouch for is read by the exact scanner, which names every problem's line.
    """
    source = lookup.model.spec.block(CsvSource)
    if not (source is not None):
        raise RuntimeError("invariant broken: source is not None")
    size = path.stat().st_size
    show = progress if progress is not None and size >= PROGRESS_MIN_BYTES else None
    with show(path, size) if show is not None else nullcontext():
        return _scan(source, path, size)


def _scan(source: CsvSource, path: Path, size: int) -> CsvScan:
    from reconciler.spec import csvengine

    positions = key_columns(source)
    columns = [(c.name, c.type) for c in source.columns]
    if size >= csvengine.ENGINE_MIN_BYTES and csvengine.available():
        fast = csvengine.check_file(
            path,
            columns,
            has_header=source.hasHeader,
            skip_empty_lines=source.skipEmptyLines,
            skip_preface=source.skipPreface,
            key_columns=positions,
        )
        if fast is not None:
            rows, facts, prologue = fast
            return CsvScan(
                rows=rows,
                sha256=facts.sha256,
                size=facts.size,
                header=prologue.header,
                bom=facts.bom or prologue.bom,
            )
    with path.open("rb") as handle:
        return scan_csv(
            handle,
            columns,
            has_header=source.hasHeader,
            skip_empty_lines=source.skipEmptyLines,
            skip_preface=source.skipPreface,
            key_columns=positions,
        )


def check_csv_file(
    lookup: LoadedLookup,
    path: Path,
    scans: dict[Path, Any] | None = None,
    progress: ScanProgress | None = None,
) -> list[Diagnostic]:
    """Diagnostics for a lookup's local CSV: missing file, header, cells, duplicate keys.

    A successful scan is kept in ``scans`` (by path) so a plan does not read the file again.
    """
    at = ("spec", "csv", "file")
    if not path.is_file():
        return [
            lookup.diagnostic(
                at,
                f"CSV file not found: {path}",
                hint="csv.file is relative to the spec file's folder",
            )
        ]
    try:
        scan = scan_spec_csv(lookup, path, progress)
    except re.error as exc:
        return [
            lookup.diagnostic(("spec", "csv", "skipPreface"), f"not a regular expression: {exc}")
        ]
    except OSError as exc:
        return [lookup.diagnostic(at, f"cannot read {path}: {exc.strerror}")]
    if scans is not None:
        scans[path] = scan
    found = [
        Diagnostic(str(path), line, None, "", message, hint=f"declared in {lookup.path}")
        for line, message in scan.errors
    ]
    if scan.error_count > len(scan.errors):
        found.append(
            lookup.diagnostic(
                at,
                f"{scan.error_count - len(scan.errors)} more error(s) in {path.name} not shown",
            )
        )
    return found
