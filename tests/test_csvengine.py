"""The columnar fast path against the exact scanner: it may only ever say "valid" when the exact
scanner does (with the same rows, sha256, size and header), and it does say so for clean files."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.spec import csvengine
from reconciler.spec.csvcheck import scan_csv
from tests.support import csv_bytes

# Asked of the import system, not by importing DuckDB (70 ms in every worker at collection).
pytestmark = pytest.mark.skipif(find_spec("duckdb") is None, reason="needs the big extra (duckdb)")

TYPES = [
    "STRING",
    "BOOLEAN",
    "INT4",
    "INT8",
    "FLOAT8",
    "HEX4",
    "IP4",
    "IP6",
    "TIMESTAMP",
    "DURATION",
]
GOOD = {
    "STRING": st.text(alphabet="abc xyz-_.,\"'é", max_size=6),
    "BOOLEAN": st.sampled_from(["true", "FALSE", "1", "0", " true "]),
    "INT4": st.integers(-(2**31), 2**31 - 1).map(str),
    "INT8": st.integers(-(2**63), 2**63 - 1).map(str),
    "FLOAT8": st.sampled_from(["1.5", "-2", "3e-4", ".5", "7."]),
    "HEX4": st.sampled_from(["0x1F", "ff", "DEADBEEF", "0X0"]),
    "IP4": st.ip_addresses(v=4).map(str),
    "IP6": st.ip_addresses(v=6).map(str),
    "TIMESTAMP": st.sampled_from(["1767225600000", "2026-01-31T10:00:00Z", "2026-02-28"]),
    "DURATION": st.sampled_from(["5m", "1h30m", "250ms", "42"]),
}
BAD = st.sampled_from(
    [
        "x",
        "2147483648",
        "99999999999999999999",
        "01.2.3.4",
        "1_000",
        "nan",
        "0x",
        "2026-02-30",
        "\ttrue",
        "TRUE\u00a0",
        "falſe",
        "١٢",
        "+7",
        "1e",
        "::g",
        "5 m",
    ]
)


# A cell of each type: mostly good, else empty or bad. Made once: a fresh one_of per cell drawn
# took a third of the files' generation time.
CELLS = {kind: st.one_of(GOOD[kind], GOOD[kind], GOOD[kind], st.just(""), BAD) for kind in TYPES}


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str]], dict[str, object]]:
    kinds = draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=4))
    columns = [(f"c{i}", kind) for i, kind in enumerate(kinds)]
    has_header = draw(st.booleans())
    preface = draw(st.sampled_from([None, "^#"]))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    lines: list[str] = []
    if preface:
        lines += [f"# note {i}" for i in range(draw(st.integers(0, 2)))]
    if has_header:
        lines.append(",".join(name for name, _ in columns))
    for _ in range(draw(st.integers(0, 12))):
        cells = [draw(CELLS[kind]) for _, kind in columns]
        cells = [
            f'"{c.replace(chr(34), chr(34) * 2)}"' if any(x in c for x in ',"') else c
            for c in cells
        ]
        if draw(st.integers(0, 30)) == 0:
            cells = cells[:-1] if len(cells) > 1 else [*cells, "extra"]  # a wrong field count
        lines.append(",".join(cells))
        if draw(st.integers(0, 40)) == 0:
            lines.append("")  # a blank line
    text = newline.join(lines) + (newline if draw(st.booleans()) else "")
    bom = "\ufeff" if draw(st.integers(0, 10)) == 0 else ""
    options = {
        "has_header": has_header,
        "skip_empty_lines": draw(st.booleans()),
        "skip_preface": preface,
        "key_columns": draw(st.sampled_from([None, [0], list(range(len(columns)))])),
    }
    return (bom + text).encode(), columns, options


@settings(max_examples=120, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=csv_files())
def test_the_fast_path_never_calls_valid_what_the_exact_scanner_refuses(
    tmp_path: Path, case: tuple[bytes, list[tuple[str, str]], dict[str, object]]
) -> None:
    data, columns, options = case
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    fast = csvengine.check_file(path, columns, **options)  # type: ignore[arg-type]
    with path.open("rb") as handle:
        exact = scan_csv(handle, columns, **options)  # type: ignore[arg-type]
    if fast is not None:
        rows, facts, prologue = fast
        assert exact.ok, exact.errors
        assert (rows, facts.sha256, facts.size) == (exact.rows, exact.sha256, exact.size)
        assert prologue.header == exact.header


def test_connections_share_a_database_but_not_their_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each use gets a connection of its own to the process's database: the row diff's temporary
    tables (``old``, ``new``, ``d``) of two uses at once do not meet, and the database spills to a
    private folder under the memory limit, never into the current folder (the user's repo)."""
    import tempfile

    monkeypatch.chdir(tmp_path)
    for ordered in (True, False):
        with csvengine.connect(ordered=ordered) as one, csvengine.connect(ordered=ordered) as two:
            one.execute("CREATE TEMP TABLE d AS SELECT 1 AS n")
            two.execute("CREATE TEMP TABLE d AS SELECT 2 AS n")
            assert one.execute("SELECT n FROM d").fetchall() == [(1,)]
            assert two.execute("SELECT n FROM d").fetchall() == [(2,)]
            (spill, order, limit) = one.execute(
                "SELECT current_setting('temp_directory'), "
                "current_setting('preserve_insertion_order'), current_setting('memory_limit')"
            ).fetchone()
        assert Path(spill).parent == Path(tempfile.gettempdir()) and Path(spill).is_dir()
        assert not Path(spill).is_relative_to(tmp_path)
        assert order is ordered and limit.replace(" ", "").startswith("190")
    assert list(tmp_path.iterdir()) == []


def test_the_fast_path_vouches_for_a_clean_file_of_every_type(tmp_path: Path) -> None:
    row = [
        "10.0.0.1",
        "true",
        "-7",
        "9000000000",
        "1.5",
        "0x1F",
        "x y",
        "::1",
        "2026-01-31T10:00:00Z",
        "1h30m",
    ]
    kinds = [
        "IP4",
        "BOOLEAN",
        "INT4",
        "INT8",
        "FLOAT8",
        "HEX4",
        "STRING",
        "IP6",
        "TIMESTAMP",
        "DURATION",
    ]
    columns = [(f"c{i}", kind) for i, kind in enumerate(kinds)]
    lines = ["# exported", ",".join(name for name, _ in columns)]
    lines += [",".join([f"10.0.{i // 256}.{i % 256}", *row[1:]]) for i in range(500)]
    path = tmp_path / "clean.csv"
    path.write_text("\r\n".join(lines) + "\r\n")
    fast = csvengine.check_file(
        path, columns, has_header=True, skip_empty_lines=False, skip_preface="^#", key_columns=[0]
    )
    assert fast is not None and fast[0] == 500
    with path.open("rb") as handle:
        exact = scan_csv(handle, columns, has_header=True, skip_preface="^#", key_columns=[0])
    assert exact.ok and exact.rows == 500 and exact.sha256 == fast[1].sha256


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("10.0.0.1,1\n10.0.0.1,2\n", "duplicate key"),
        ("10.0.0.1,1\n10.0.0.300,2\n", "an IP4 out of range"),
        ("10.0.0.1,1\n\n10.0.0.2,2\n", "a blank line"),
        ("10.0.0.1,1\r10.0.0.2,2\r", "bare carriage returns"),
        ("10.0.0.1,2147483648\n", "INT4 overflow"),
        ("10.0.0.1\n", "a missing field"),
    ],
)
def test_the_fast_path_leaves_every_doubt_to_the_exact_scanner(
    tmp_path: Path, body: str, why: str
) -> None:
    path = tmp_path / "f.csv"
    path.write_text(body, newline="")
    assert (
        csvengine.check_file(
            path,
            [("ip", "IP4"), ("n", "INT4")],
            has_header=False,
            skip_empty_lines=True,
            skip_preface=None,
            key_columns=[0],
        )
        is None
    ), why


@pytest.mark.parametrize(
    ("key_columns", "last", "duplicate"),
    [
        ([0], "10.0.0.0,x,9", True),  # the first row's key again, 20,000 rows later
        ([0, 1], "10.0.0.0,y,9", False),  # the same ip, another name: a new two-column key
        ([0, 1], "10.0.0.0,a0,9", True),
    ],
)
def test_the_fast_path_finds_a_duplicate_key_anywhere_in_the_file(
    tmp_path: Path, key_columns: list[int], last: str, duplicate: bool
) -> None:
    path = tmp_path / "keys.csv"
    rows = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256},a{i}, {i} " for i in range(20_000)]
    path.write_text("\n".join([*rows, last]) + "\n")
    found = csvengine.check_file(
        path,
        [("ip", "IP4"), ("name", "STRING"), ("n", "INT4")],
        has_header=False,
        skip_empty_lines=False,
        skip_preface=None,
        key_columns=key_columns,
    )
    # Numbers with spaces around them are valid (the exact scanner strips them too).
    assert (found is None) == duplicate and (duplicate or found and found[0] == 20_001)


# --- row diffs: DuckDB's join against the Python comparison -------------------------------------


@st.composite
def csv_versions(draw: st.DrawFn) -> tuple[str, str, bool]:
    """Two versions of a keyed CSV: rows kept, changed (cells with commas and quotes too),
    removed and added."""
    has_header = draw(st.booleans())
    value = st.text(alphabet='ab ,"x', max_size=5)
    keys = draw(st.lists(st.integers(0, 60), unique=True, max_size=25))
    old = {k: [f"10.0.0.{k}", draw(value)] for k in keys}
    new = {k: list(v) for k, v in old.items() if draw(st.integers(0, 4))}
    for k in list(new):
        if not draw(st.integers(0, 3)):
            new[k][1] = draw(value)
    for k in draw(st.lists(st.integers(61, 99), unique=True, max_size=5)):
        new[k] = [f"10.0.0.{k}", draw(value)]

    def text(rows: dict[int, list[str]]) -> str:
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if has_header:
            writer.writerow(["ip", "note"])
        writer.writerows(rows.values())
        return out.getvalue()

    return text(old), text(new), has_header


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=csv_versions())
def test_duckdb_row_diffs_agree_with_python(tmp_path: Path, case: tuple[str, str, bool]) -> None:
    import csv

    from reconciler.plan import rows
    from reconciler.sources.csv import CsvSource

    old_text, new_text, has_header = case
    source = CsvSource.model_validate(
        {
            "file": "x.csv",
            "hasHeader": has_header,
            "columns": [{"name": "ip", "type": "IP4"}, {"name": "note"}],
            "key": {"type": "column", "column": "ip"},
        }
    )
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text(old_text)
    new.write_text(new_text)
    results = []
    for name, engine in (("py", rows._python_delta), ("db", None)):
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        for leftover in folder.iterdir():
            leftover.unlink()
        if engine is not None:
            delta = engine(old.read_bytes(), new.read_bytes(), source, folder)
        else:
            found = rows.engine_delta(old, new, source, folder)
            assert found is not None
            delta = found
        uploads = {
            kind: sorted(map(tuple, csv.reader(path.read_text().splitlines())))
            for kind, path in delta.uploads()
        }
        results.append(
            (
                (delta.added, delta.removed, delta.changed),
                sorted(delta.samples),
                uploads,
                delta.send_rows,
            )
        )
    assert results[0][0] == results[1][0]
    assert results[0][2] == results[1][2]
    assert results[0][3] == results[1][3]
    if sum(results[0][0]) <= 3:  # every change is a sample: the same ones
        assert results[0][1] == results[1][1]


@pytest.mark.parametrize("cell", [b"a\rb", b"\rb"])
def test_a_carriage_return_inside_an_unquoted_cell_is_refused_by_both_paths(
    tmp_path: Path, cell: bytes
) -> None:
    """The csv module refuses it; validate names the line and says what to do, and the fast path
    does not call the file valid (the emulator's ingest refuses it too: tests/test_emulator)."""
    path = tmp_path / "f.csv"
    path.write_bytes(b"ip,name\n10.0.0.1,ok\n10.0.0.2," + cell + b"\n10.0.0.3,ok\n")
    columns = [("ip", "IP4"), ("name", "STRING")]
    options = {"has_header": True, "skip_empty_lines": False, "skip_preface": None}
    assert csvengine.check_file(path, columns, **options, key_columns=[0]) is None
    with path.open("rb") as handle:
        exact = scan_csv(handle, columns, **options, key_columns=[0])  # type: ignore[arg-type]
    [(line, message)] = exact.errors
    assert line == 3 and "carriage return inside an unquoted cell" in message, exact.errors
    assert "do you need" not in message  # the csv module's hint to programmers is not shown


_COLUMNS = [("ip", "IP4"), ("n", "INT8"), ("name", "STRING")]
_ANY_BYTES = csv_bytes(b"#", max_size=24)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_ANY_BYTES, header=st.booleans(), skip_empty=st.booleans(), preface=st.booleans())
def test_the_fast_path_takes_any_bytes_without_an_exception(
    tmp_path: Path, data: bytes, header: bool, skip_empty: bool, preface: bool
) -> None:
    """Whatever the bytes (a header that is not UTF-8 or holds a lone CR crashed validate of a
    file over 1 MiB), the fast path vouches or steps aside, and vouches only for what the exact
    scanner takes, with its row count."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    options = {
        "has_header": header,
        "skip_empty_lines": skip_empty,
        "skip_preface": "^#" if preface else None,
    }
    fast = csvengine.check_file(path, _COLUMNS, **options, key_columns=[0])  # type: ignore[arg-type]
    with path.open("rb") as handle:
        exact = scan_csv(handle, _COLUMNS, **options, key_columns=[0])  # type: ignore[arg-type]
    if fast is not None:
        assert exact.ok and fast[0] == exact.rows, (exact.errors, fast[0], exact.rows)


@pytest.mark.parametrize(
    "first", [b"ip,n,na\xffme\n", b"ip,n,na\rme\n", b"# pre\xfface\nip,n,name\n"]
)
def test_a_prologue_the_fast_path_cannot_read_is_the_exact_scanners(
    tmp_path: Path, first: bytes
) -> None:
    """Not UTF-8, or a lone CR, in the header or a preface line: the fast path steps aside and
    the exact scanner names line 1 or 2 (it was an internal error)."""
    path = tmp_path / "f.csv"
    path.write_bytes(first + b"10.0.0.1,1,a\n")
    options = {"has_header": True, "skip_empty_lines": False, "skip_preface": "^#"}
    assert csvengine.check_file(path, _COLUMNS, **options, key_columns=[0]) is None  # type: ignore[arg-type]
    with path.open("rb") as handle:
        exact = scan_csv(handle, _COLUMNS, **options, key_columns=[0])  # type: ignore[arg-type]
    [(line, message)] = exact.errors
    assert line == 1 and ("not UTF-8" in message or "carriage return" in message), exact.errors


@pytest.mark.parametrize(
    ("data", "options", "error"),
    [
        # DuckDB reads one delimiter at a line's end as the end: "a,b,c," as three fields.
        (b"10.0.0.1,1,a\n10.0.0.2,2,b,\n", {}, (2, "4 fields, expected 3")),
        (b",,,", {}, (1, "4 fields, expected 3")),
        # A carriage return as the file's very last byte (no line feed can follow it).
        (b"ip,n,name\n\r", {"has_header": True}, (2, "empty line")),
        # A preface ending in LF before lines ending in CRLF: DuckDB read no row at all.
        (
            b"#x\nip,n,name\r\n10.0.0.300,1,a\r\n",
            {"has_header": True, "skip_preface": "^#"},
            (3, "column 'ip'"),
        ),
    ],
)
def test_what_duckdb_reads_otherwise_than_csv_goes_to_the_exact_scanner(
    tmp_path: Path, data: bytes, options: dict[str, object], error: tuple[int, str]
) -> None:
    """Found by the property test above: each was vouched for by the fast path (validate of a
    file over 1 MiB said valid) where the exact scanner, and Devo, refuse it."""
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    full = {"has_header": False, "skip_empty_lines": False, "skip_preface": None, **options}
    assert csvengine.check_file(path, _COLUMNS, **full, key_columns=[0]) is None  # type: ignore[arg-type]
    with path.open("rb") as handle:
        exact = scan_csv(handle, _COLUMNS, **full, key_columns=[0])  # type: ignore[arg-type]
    [(line, message)] = exact.errors
    assert line == error[0] and error[1] in message, exact.errors
