"""The columnar fast path for big CSVs: DuckDB checks a whole file in one parallel pass.

Measured on a 100 MB file (IP4, INT8, STRING; 2.6 M rows) against Python's own ``csv.reader``
merely counting its rows (0.9 s): DuckDB did every check including duplicate keys in 0.75 s at
227 MB peak; pyarrow's streaming reader did the cell checks in 0.81 s but has no duplicate check
(it would take a Python-side set again); polars did all of it in 0.85 s at 382 MB. DuckDB it is:
SQL for the checks, both cores, and a memory limit it spills under instead of growing.

The fast path only ever answers "valid" (with the row count, sha256 and header) or "I cannot say".
Anything it does not vouch for, any problem found, any file shape it does not read exactly as
Python's ``csv`` does (blank lines, bare ``\\r``, a NUL byte, a quoted header, a byte-order mark on
a data line) goes to the exact line-by-line scanner (``csvcheck.scan_csv``), which names the file,
line and column of every problem. So a file is never called valid here that the exact scanner
would refuse: ``tests/test_csvengine.py`` checks that on generated files.
"""

from __future__ import annotations

import atexit
import codecs
import csv
import hashlib
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.sources.csv import CsvSource

#: From this size on, the engine is used (checks and row diffs). Measured on 3-column files:
#: the exact scanner reads ~3 MB/s, the engine ~30 MB/s after ~0.1 s to import and open it; the
#: Python row diff beats DuckDB's join up to ~300 KB. At 1 MiB the engine wins both, cold.
ENGINE_MIN_BYTES = 1024 * 1024
#: DuckDB's longest line (its ``max_line_size`` default); a file with a longer one is scanned
#: exactly instead. Chunks of 1 MiB cannot hold a longer line whole, so only runs across them count.
MAX_LINE_BYTES = 2 * 1024 * 1024
#: DuckDB's working memory; past it, it spills to disk (the sort that finds duplicate keys).
MEMORY_LIMIT = "200MB"
#: What each of DuckDB's CSV reading threads buffers (its default is 32 MiB, most of the scan's
#: peak): 4 times the longest line it reads. Measured on the 100 MB file: no slower, ~30 MB less.
CSV_BUFFER_BYTES = 4 * MAX_LINE_BYTES

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
# The accepted forms of ``reconciler.coltypes`` (README, "Cell values") as RE2 patterns, applied to
# the cell with spaces trimmed (Python strips all white space: where the two differ, the cell is
# flagged here and the exact scanner decides).
_PATTERNS = {
    "BOOLEAN": r"[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|1|0",
    "INT4": r"-?[0-9]+",
    "INT8": r"-?[0-9]+",
    "FLOAT4": r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?",
    "FLOAT8": r"-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?",
    "HEX4": r"(0[xX])?[0-9a-fA-F]{1,8}",
    "HEX8": r"(0[xX])?[0-9a-fA-F]{1,16}",
    "IP4": rf"{_OCTET}(\.{_OCTET}){{3}}",
}
_RANGES = {"INT4": (-(2**31), 2**31 - 1), "INT8": (-(2**63), 2**63 - 1)}
# Types whose forms SQL cannot state exactly: checked by Python's own parser, inside DuckDB.
_BY_PYTHON = ("IP6", "TIMESTAMP", "DURATION")


@dataclass
class Prologue:
    """What the exact scanner would read before the first data row."""

    skip: int = 0  # physical lines before the data: preface lines and the header
    header: list[str] | None = None
    bom: bool = False


@dataclass
class Bytes:
    """One pass over the bytes: digest, size, and the shapes the fast path does not vouch for."""

    sha256: str = ""
    size: int = 0
    bom: bool = False
    doubtful: list[str] = field(default_factory=list)


#: This process's DuckDB databases, one per insertion-order setting (a database-wide setting), with
#: their spill folders. Opening a database costs ~20 ms; a connection to an open one ~0.1 ms.
_DATABASES: dict[bool, tuple[Any, str]] = {}
_DATABASES_LOCK = threading.Lock()


def _database(ordered: bool) -> Any:
    """The process's database for ``ordered``, opened on first use and closed at exit."""
    import duckdb

    with _DATABASES_LOCK:
        if ordered not in _DATABASES:
            spill = tempfile.mkdtemp(prefix="reconciler-duckdb-")
            config: dict[str, str | bool | int | float | list[str]] = {
                "memory_limit": MEMORY_LIMIT,
                "preserve_insertion_order": ordered,
                "temp_directory": spill,
            }
            if not _DATABASES:
                atexit.register(_close_databases)
            _DATABASES[ordered] = (duckdb.connect(config=config), spill)
        return _DATABASES[ordered][0]


def _close_databases() -> None:
    with _DATABASES_LOCK:
        for database, spill in _DATABASES.values():
            database.close()
            shutil.rmtree(spill, ignore_errors=True)
        _DATABASES.clear()


@contextmanager
def connect(*, ordered: bool) -> Iterator[Any]:
    """A connection of its own (its temporary tables are its own) to this process's DuckDB
    database: under the memory limit, spilling to a private temporary folder.

    (An in-memory DuckDB would otherwise spill into ``.tmp`` in the current folder: the user's
    repository.) ``ordered``: keep rows in file order (row diffs sample them in that order).
    """
    con = _database(ordered).cursor()
    try:
        yield con
    finally:
        con.close()


def column_names(count: int) -> list[str]:
    """The SQL names of a CSV's columns (``c0``, ``c1``...; the spec's names may be anything)."""
    return [f"c{i}" for i in range(count)]


#: The extra column of ``csv_table(..., counted=True)``.
EXTRA = "cx"


def csv_table(
    path: Path,
    skip: int,
    names: list[str],
    *,
    buffer_size: int | None = None,
    counted: bool = False,
) -> str:
    """DuckDB's reading of a CSV exactly as Python's csv module reads it, every cell as text
    (``buffer_size``: the bytes each reading thread holds; DuckDB's default is 32 MiB).

    ``counted``: for telling a line's fields apart from its columns. DuckDB takes one delimiter at
    the end of a line as the line's end (``a,b,c,`` reads as three fields, where csv and Devo read
    four), so the reading has one column more, ``EXTRA``, lines are padded, and an empty cell is
    read as ``''`` (the null string is a NUL, which a file the fast path takes never holds): a
    field too many leaves ``EXTRA`` not NULL, a field too few leaves the last column NULL.
    """
    literal = str(path).replace("'", "''")
    spec = ", ".join(f"'{n}': 'VARCHAR'" for n in [*names, *([EXTRA] if counted else [])])
    buffer = f", buffer_size = {buffer_size}" if buffer_size else ""
    padding = "true, nullstr = chr(0)" if counted else "false"
    return (
        f"read_csv('{literal}', header = false, skip = {skip}, columns = {{{spec}}}, "
        f"delim = ',', quote = '\"', escape = '\"', strict_mode = true, null_padding = {padding}, "
        f"auto_detect = false{buffer})"
    )


def available() -> bool:
    """True when DuckDB (the ``big`` extra) is installed."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def read_bytes_facts(path: Path) -> Bytes:
    """sha256 and size, and whether the file holds what only the exact scanner reads right."""
    facts = Bytes()
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    last = b""  # the previous chunk's last byte, for a blank line across the boundary
    line = 0  # bytes of the line still open at the end of the last chunk
    # Line ends of both kinds: DuckDB reads the lines after a preface or header that ends
    # otherwise than they do as none (zero rows where csv reads them all).
    crlf = lf = False
    with path.open("rb") as handle:
        first = True
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            facts.size += len(chunk)
            if first:
                facts.bom = chunk.startswith(codecs.BOM_UTF8)
                if chunk[:1] in (b"\n", b"\r"):
                    facts.doubtful.append("a blank first line")
                first = False
            if b"\x00" in chunk:
                facts.doubtful.append("a NUL byte")
            # ASCII is UTF-8: only other bytes (or a character begun in the last chunk) are
            # decoded, which costs as much as the digest.
            if not chunk.isascii() or decoder.getstate()[0]:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    facts.doubtful.append("bytes that are not UTF-8")
            # Blank lines: DuckDB skips them, the exact scanner reports or skips them by the spec.
            if b"\n\n" in chunk or (last == b"\n" and chunk[:1] == b"\n"):
                facts.doubtful.append("blank lines")
            # CRLF line ends are read alike; a bare \r ends a line for csv but not for DuckDB.
            if b"\r" in chunk or last == b"\r":
                data = last + chunk if last == b"\r" else chunk
                pairs = data.count(b"\r\n")
                bare = data.count(b"\r") - pairs - data.endswith(b"\r")
                if bare:
                    facts.doubtful.append("a carriage return without a line feed")
                if b"\n\r\n" in data or (last == b"\n" and chunk[:2] == b"\r\n"):
                    facts.doubtful.append("blank lines")
                crlf = crlf or pairs > 0
                lf = lf or data.count(b"\n") > pairs
            else:
                lf = lf or b"\n" in chunk
            if crlf and lf:
                facts.doubtful.append("line ends of both kinds (LF and CRLF)")
            # DuckDB drops a line longer than its max_line_size without a word (a 50 MB cell
            # read as zero rows): such a file is the exact scanner's, which names the line.
            first_end = chunk.find(b"\n")
            if (line + (len(chunk) if first_end < 0 else first_end)) > MAX_LINE_BYTES:
                facts.doubtful.append("a line longer than 2 MiB")
            line = line + len(chunk) if first_end < 0 else len(chunk) - chunk.rfind(b"\n") - 1
            last = chunk[-1:]
            if facts.doubtful:
                break
    if last == b"\r" and not facts.doubtful:  # the file's last byte: no line feed can follow
        facts.doubtful.append("a carriage return without a line feed")
    if facts.doubtful:
        return facts
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        facts.doubtful.append("a truncated UTF-8 character")
    facts.sha256 = digest.hexdigest()
    return facts


def read_prologue(path: Path, has_header: bool, skip_preface: str | None) -> Prologue | None:
    """The preface lines and the header, read as the exact scanner reads them (None: unsure)."""
    preface = re.compile(skip_preface) if skip_preface else None
    prologue = Prologue()
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
                prologue.bom = True
            try:
                line = raw.decode("utf-8", errors="strict").rstrip("\r\n")
            except UnicodeDecodeError:
                return None  # the exact scanner names the line
            if preface is not None and preface.search(line):
                if '"' in line:
                    return None  # DuckDB's skip might read a quote there as opening a field
                prologue.skip += 1
                continue
            if not has_header:
                break
            if '"' in line or not line.strip():
                return None  # a quoted or blank header: the exact scanner reads it
            try:
                prologue.header = next(csv.reader([line]))
            except csv.Error:  # a lone CR in the header: the exact scanner says so
                return None
            prologue.skip += 1
            break
    if prologue.bom and prologue.skip == 0:
        return None  # the mark would sit on a data row, where DuckDB and csv read it differently
    return prologue


def _cell_check(column: str, column_type: str) -> str:
    """SQL true when the cell is acceptable (null and empty cells always are)."""
    kind = column_type.upper()
    if kind == "STRING":
        return "true"
    if kind in _BY_PYTHON:
        return "true"  # checked on the column's distinct values, by Python (see _python_columns)
    # The pattern allows the spaces around the form that trim() would take off, without making
    # a trimmed copy of every cell (a tenth of the check's time). TRY_CAST takes white space
    # around a number as it is; the pattern has already refused any that is not spaces.
    value = f'"{column}"'
    check = f"regexp_full_match({value}, ' *(?:{_PATTERNS[kind]}) *')"
    if kind in _RANGES:
        low, high = _RANGES[kind]
        check += f" AND TRY_CAST({value} AS HUGEINT) BETWEEN {low} AND {high}"
    return f'("{column}" IS NULL OR "{column}" = \'\' OR coalesce({check}, false))'


def _python_columns(
    con: Any, source: str, names: list[str], columns: Sequence[tuple[str, str]]
) -> bool:
    """Check the columns whose forms SQL cannot state (IP6, TIMESTAMP, DURATION) with Python's own
    parser, on each column's distinct values (fetched in batches: bounded memory)."""
    from reconciler.coltypes import parse_cell

    for name, (_, kind) in zip(names, columns, strict=True):
        if kind.upper() not in _BY_PYTHON:
            continue
        cursor = con.execute(
            f'SELECT DISTINCT "{name}" FROM {source} WHERE "{name}" IS NOT NULL AND "{name}" <> \'\''
        )
        while batch := cursor.fetchmany(50_000):
            for (value,) in batch:
                try:
                    parse_cell(kind, value)
                except ValueError:
                    return False
    return True


def check_file(
    path: Path,
    columns: Sequence[tuple[str, str]],
    *,
    has_header: bool,
    skip_empty_lines: bool,
    skip_preface: str | None,
    key_columns: Sequence[int] | None,
) -> tuple[int, Bytes, Prologue] | None:
    """(data rows, byte facts, prologue) when the file is certainly valid; None when unsure."""
    import duckdb

    prologue = read_prologue(path, has_header, skip_preface)
    if prologue is None:
        return None
    if has_header and [h.strip() for h in prologue.header or []] != [n for n, _ in columns]:
        return None
    names = column_names(len(columns))
    checks = [_cell_check(name, kind) for name, (_, kind) in zip(names, columns, strict=True)]
    # (No field-length check here: a line over MAX_LINE_BYTES makes the file doubtful.)
    # Columns no check reads (STRING, not in the key) are not even materialised (projection).
    fields = f'"{EXTRA}" IS NOT NULL OR "{names[-1]}" IS NULL'  # one too many, or too few
    bad = f"({fields} OR NOT ({' AND '.join(checks)}))"
    key = (
        "concat_ws(chr(31), "
        + ", ".join(f"coalesce(\"{names[i]}\", '')" for i in key_columns)
        + ")"
        if key_columns
        else None
    )
    # Keys by their 64-bit hash: a tenth of the memory of the strings; equal keys hash alike, so
    # a duplicate is always seen (a collision of distinct keys only sends the file to the exact
    # scanner, at odds of about N² / 2^65). A duplicate is a hash equal to the one before it in
    # hash order: a sort, which spills to disk past the memory limit, where the hash table of
    # count(DISTINCT) held ~50 MB more at its peak (100 MB file: 202 MB against 230-265 MB).
    source = csv_table(path, prologue.skip, names, buffer_size=CSV_BUFFER_BYTES, counted=True)
    if key:
        query = (
            "SELECT count(*), count(*) FILTER (WHERE bad), count(*) FILTER (WHERE h = before) "
            "FROM (SELECT bad, h, lag(h) OVER (ORDER BY h) AS before "
            f"FROM (SELECT {bad} AS bad, hash({key}) AS h FROM {source}))"
        )
    else:
        query = f"SELECT count(*), count(*) FILTER (WHERE {bad}), 0 FROM {source}"
    python_ok = False
    # The byte pass (hashing releases the GIL) runs beside DuckDB's own threads.
    with ThreadPoolExecutor(max_workers=1) as pool:
        reading = pool.submit(read_bytes_facts, path)
        try:
            with connect(ordered=False) as con:
                row = con.execute(query).fetchone()
                if row is not None and not row[1] and not row[2]:
                    python_ok = _python_columns(con, source, names, columns)
        except duckdb.Error:
            return None  # a structure DuckDB refuses (field counts, quoting): the exact scan says
        facts = reading.result()
    if row is None or row[1] or row[2] or facts.doubtful or not python_ok:
        return None
    return int(row[0]), facts, prologue


@dataclass
class RowDelta:
    """What changed between two versions of a CSV, by key, and the delta uploads that carry it
    (both comparisons make one: ``keyed_delta`` here, the Python one in ``reconciler.plan.rows``)."""

    added: int
    removed: int
    changed: int
    samples: list[str]
    # The uploads, written: old rows whose keys go (removed rows, changed rows' old versions) and
    # new rows (added rows, changed rows' new versions). Either may be missing when it is empty.
    deletes: Path | None = None
    adds: Path | None = None
    send_rows: int = 0

    @property
    def send_bytes(self) -> int:
        """The bytes the two uploads send."""
        return sum(p.stat().st_size for p in (self.deletes, self.adds) if p is not None)

    def uploads(self) -> list[tuple[str, Path]]:
        """The uploads in the order Devo's row protocol takes them: ``del`` first, then ``add``."""
        return [(k, p) for k, p in (("del", self.deletes), ("add", self.adds)) if p is not None]


def keyed_delta(
    old: Path, new: Path, source: CsvSource, folder: Path, samples_limit: int
) -> RowDelta | None:
    """Two versions of a CSV compared by the lookup's key in DuckDB: a full outer join, bounded
    memory, both cores; the delta uploads (``delta.del.csv``, ``delta.add.csv``) are written into
    ``folder``. None when DuckDB cannot read them (the caller compares in Python)."""
    import duckdb

    from reconciler.sources.csv import key_columns

    names = column_names(len(source.columns))
    positions = key_columns(source)
    keyed = [names[i] for i in positions] if positions else names
    cells = ", ".join(f"coalesce({n}, '')" for n in names)
    header = [c.name for c in source.columns]
    try:
        with connect(ordered=True) as con:
            for table, path in (("old", old), ("new", new)):
                prologue = read_prologue(path, source.hasHeader, source.skipPreface)
                if prologue is None:
                    return None
                con.execute(
                    f"CREATE TEMP TABLE {table} AS SELECT row_number() OVER () AS n, "
                    f"[{', '.join(f'coalesce({k}, {chr(39) * 2})' for k in keyed)}] AS k, "
                    f"[{cells}] AS r, {', '.join(names)} "
                    f"FROM {csv_table(path, prologue.skip, names)}"
                )
            con.execute(
                "CREATE TEMP TABLE d AS SELECT o.n AS old_n, w.n AS new_n, "
                "CASE WHEN o.k IS NULL THEN 'added' WHEN w.k IS NULL THEN 'removed' "
                "WHEN o.r <> w.r THEN 'changed' END AS what, "
                "array_to_string(o.r, ',') AS before, array_to_string(w.r, ',') AS after "
                "FROM old o FULL OUTER JOIN new w ON o.k = w.k"
            )
            counts = dict(con.execute("SELECT what, count(*) FROM d GROUP BY what").fetchall())
            samples: list[str] = []
            for what, mark, order in (
                ("added", "+", "new_n"),
                ("removed", "-", "old_n"),
                ("changed", "~", "new_n"),
            ):
                for before, after in con.execute(
                    f"SELECT before, after FROM d WHERE what = '{what}' ORDER BY {order} "
                    f"LIMIT {samples_limit}"
                ).fetchall():
                    text = {"+": after, "-": before, "~": f"{before} → {after}"}[mark]
                    samples.append(f"{mark} {text}")
            delta = RowDelta(
                counts.get("added", 0), counts.get("removed", 0), counts.get("changed", 0), samples
            )
            columns = ", ".join(f'{n} AS "{h}"' for n, h in zip(names, header, strict=True))
            for kind, table, side, whats in (
                ("del", "old", "old_n", "('removed', 'changed')"),
                ("add", "new", "new_n", "('added', 'changed')"),
            ):
                rows = con.execute(f"SELECT count(*) FROM d WHERE what IN {whats}").fetchone()
                if not rows or not rows[0]:
                    continue
                target = folder / f"delta.{kind}.csv"
                literal = str(target).replace("'", "''")
                con.execute(
                    f"COPY (SELECT {columns} FROM {table} t JOIN d ON t.n = d.{side} "
                    f"WHERE d.what IN {whats} ORDER BY t.n) TO '{literal}' "
                    f"(FORMAT csv, HEADER {str(source.hasHeader).lower()}, DELIMITER ',')"
                )
                setattr(delta, "deletes" if kind == "del" else "adds", target)
                delta.send_rows += int(rows[0])
    except duckdb.Error:
        return None
    return delta


__all__ = ["ENGINE_MIN_BYTES", "RowDelta", "available", "check_file", "keyed_delta"]
