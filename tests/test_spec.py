"""The spec language: loader positions, env substitution, semantic rules, CSV scans, the schema."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.cli import app
from reconciler.coltypes import parse_cell, parse_duration_ms
from reconciler.linq import query_columns
from reconciler.spec import load_specs, validate_paths
from reconciler.spec.csvcheck import scan_csv
from tests.support import CliRunner

ROOT = Path(__file__).resolve().parent.parent
LOOKUP = """apiVersion: reconciler/v1
kind: Lookup
metadata: {{domain: {domain}, name: {name}}}
spec:
{spec}
"""


def write_lookup(folder: Path, file: str, name: str, spec: str, domain: str = "acme") -> Path:
    path = folder / file
    body = LOOKUP.format(domain=domain, name=name, spec=spec)
    path.write_text(path.read_text() + "---\n" + body if path.exists() else body)
    return path


def test_examples_are_valid(runner: CliRunner, no_network: list[object]) -> None:
    result = runner.invoke(app, ["validate", str(ROOT / "specs")])
    assert result.exit_code == 0, result.stderr
    assert "9 lookup(s) and 4 domain(s), 2 polic(ies) valid in 3 file(s)" in result.stdout


def test_examples_cover_every_source_kind() -> None:
    result = load_specs([ROOT / "specs"], env={})
    kinds = {lookup.model.spec.source_kind for lookup in result.lookups}
    assert kinds == {"csv", "staticQuery", "periodicQuery", "slidingWindowQuery", "recipe"}
    assert result.domains


def test_duplicate_address_across_files(tmp_path: Path, runner: CliRunner) -> None:
    write_lookup(tmp_path, "a.yaml", "dup", "  staticQuery: {query: from a select b}")
    write_lookup(tmp_path, "b.yaml", "dup", "  staticQuery: {query: from a select b}")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "b.yaml:3:" in result.stderr and "acme/dup is already defined at" in result.stderr


def test_all_errors_of_a_run_are_reported_together(tmp_path: Path, runner: CliRunner) -> None:
    write_lookup(tmp_path, "a.yaml", "one", "  visiblity: x\n  staticQuery: {query: q}")
    write_lookup(tmp_path, "b.yaml", "two", "  periodicQuery: {query: q, refreshPeriod: 10s}")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "a.yaml" in result.stderr and "b.yaml" in result.stderr
    assert "2 error(s)" in result.stderr


def test_literal_secret_is_a_warning_not_an_error(tmp_path: Path, runner: CliRunner) -> None:
    spec = (
        "  csv:\n    columns: [{name: ip}]\n    fileProvider:\n"
        "      {bucketName: b, keyName: k, transferOwnership: false, secretKey: hunter2hunter2}"
    )
    write_lookup(tmp_path, "a.yaml", "s3", spec)
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    assert "warning: spec.csv.fileProvider.secretKey: literal secret" in result.stderr
    assert "hunter2hunter2" not in result.stderr + result.stdout


def test_env_substitution_skips_secret_fields(tmp_path: Path) -> None:
    spec = (
        "  csv:\n    columns: [{name: ip}]\n    fileProvider:\n"
        "      bucketName: ${env:BUCKET}\n      keyName: k\n      transferOwnership: false\n"
        "      secretKey: ${env:SECRET}"
    )
    write_lookup(tmp_path, "a.yaml", "s3", spec)
    result = load_specs([tmp_path], env={"BUCKET": "my-bucket", "SECRET": "s3cr3t"})
    assert not result.errors
    provider = result.lookups[0].model.spec.csv.fileProvider  # type: ignore[union-attr]
    assert provider is not None
    assert provider.bucketName == "my-bucket"
    assert provider.secretKey == "${env:SECRET}"


def test_oversized_file_is_refused_without_parsing(tmp_path: Path, runner: CliRunner) -> None:
    big = tmp_path / "big.yaml"
    with big.open("w") as handle:
        handle.write("# filler\n" * (9 * 1024 * 1024 // 9 + 10))
    result = runner.invoke(app, ["validate", str(big)])
    assert result.exit_code == 1
    assert "spec files are limited to 8 MiB" in result.stderr


def test_missing_path_is_an_error(tmp_path: Path, runner: CliRunner) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "no such file or directory" in result.stderr


def test_validate_json_format(tmp_path: Path, runner: CliRunner) -> None:
    write_lookup(tmp_path, "a.yaml", "x", "  staticQuery: {query: q, key: {type: hash}}")
    result = runner.invoke(app, ["validate", str(tmp_path), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    [diag] = report["diagnostics"]
    assert diag["field"] == "spec.staticQuery.key.type" and diag["line"] == 5


@pytest.mark.parametrize(
    ("query", "columns"),
    [
        ("from a select b", ["b"]),
        ("from a where x > 1 select b, c as d", ["b", "d"]),
        ("from a select count() as n group by user every 1h", ["n", "user"]),
        ("from a select upper(x) as u, y", ["u", "y"]),
        ("from a select upper(x)", None),
        ("from a", None),
        ('from a select split(x, ",", 1) as first', ["first"]),
    ],
)
def test_query_columns(query: str, columns: list[str] | None) -> None:
    assert query_columns(query) == columns


@pytest.mark.parametrize(
    ("text", "millis"),
    [("1m", 60_000), ("5m", 300_000), ("1h30m", 5_400_000), ("250ms", 250), ("1d", 86_400_000)],
)
def test_durations(text: str, millis: int) -> None:
    assert parse_duration_ms(text) == millis


@pytest.mark.parametrize("text", ["", "5", "m", "5 minutes", "1h30", "-5m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(text)


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhdw")), min_size=1))
def test_duration_sums_its_parts(parts: list[tuple[int, str]]) -> None:
    unit = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration_ms(text) == sum(n * unit[u] for n, u in parts)


@given(st.integers(-(2**31), 2**31 - 1))
def test_int4_accepts_its_range(value: int) -> None:
    parse_cell("INT4", str(value))


@given(st.integers().filter(lambda v: v < -(2**31) or v > 2**31 - 1))
def test_int4_rejects_outside_its_range(value: int) -> None:
    with pytest.raises(ValueError):
        parse_cell("INT4", str(value))


@pytest.mark.parametrize(
    ("column_type", "good", "bad"),
    [
        ("BOOLEAN", "true", "yes"),
        ("INT8", "9223372036854775807", "9223372036854775808"),
        ("FLOAT4", "1.5e3", "one"),
        ("FLOAT8", "-0.25", "1,5"),
        ("HEX4", "0xdeadbeef", "0x1deadbeef"),
        ("HEX8", "ffffffffffffffff", "xyz"),
        ("IP4", "192.168.1.1", "192.168.1.256"),
        ("IP6", "2001:db8::1", "2001:db8::g"),
        ("TIMESTAMP", "2024-01-31T10:00:00Z", "31/01/2024"),
        ("DURATION", "5m", "five minutes"),
    ],
)
def test_cell_types(column_type: str, good: str, bad: str) -> None:
    parse_cell(column_type, good)
    with pytest.raises(ValueError):
        parse_cell(column_type, bad)


@settings(max_examples=400)
@given(
    st.one_of(
        st.text(alphabet=st.sampled_from(list("0123456789.  \t/٣²:")), max_size=20),
        st.lists(st.integers(0, 300).map(str), min_size=3, max_size=5).map(".".join),
        st.lists(st.text(alphabet="0123456789", max_size=4), min_size=4, max_size=4).map(".".join),
    )
)
def test_ip4_cells_are_read_as_ipaddress_reads_them(cell: str) -> None:
    """The IP4 check (a regular expression, for speed) accepts exactly what Python's own
    ``ipaddress`` does: four ASCII-decimal octets up to 255, no leading zeros, spaces trimmed."""
    import ipaddress

    try:
        ipaddress.IPv4Address(cell.strip())
        expected = True
    except ValueError:
        expected = False
    try:
        parse_cell("IP4", cell)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == (expected or cell == ""), cell  # an empty cell is a null


def _scan(text: str, **options: object) -> object:
    return scan_csv(io.BytesIO(text.encode()), [("ip", "IP4"), ("n", "INT4")], **options)  # type: ignore[arg-type]


def test_csv_skip_preface_and_empty_lines() -> None:
    text = "# exported 2024\n# by admin\nip,n\n10.0.0.1,1\n\n10.0.0.2,2\n"
    scan = _scan(text, has_header=True, skip_empty_lines=True, skip_preface="^#")
    assert scan.ok, scan.errors  # type: ignore[attr-defined]
    assert scan.rows == 2  # type: ignore[attr-defined]
    strict = _scan(text, has_header=True, skip_preface="^#")
    assert strict.errors == [(5, "empty line (set skipEmptyLines: true to allow them)")]  # type: ignore[attr-defined]


def test_csv_reports_first_errors_and_counts_the_rest() -> None:
    text = "".join(f"10.0.0.{i % 250},x\n" for i in range(30))
    scan = _scan(text)
    assert scan.error_count == 30  # type: ignore[attr-defined]
    assert len(scan.errors) == 10 and scan.errors[0][0] == 1  # type: ignore[attr-defined]


def test_csv_scan_is_streaming() -> None:
    """Peak allocations do not grow with the size of the CSV."""

    class Generated(io.RawIOBase):
        def __init__(self, rows: int) -> None:
            self.rows, self.buffer = rows, b""

        def readable(self) -> bool:
            return True

        def readinto(self, b):  # type: ignore[no-untyped-def]
            parts, size = [self.buffer], len(self.buffer)
            while size < len(b) and self.rows:  # (joined once: no copy per row)
                self.rows -= 1
                parts.append(
                    f"10.{self.rows % 256}.{self.rows // 256 % 256}.1,{self.rows}\n".encode()
                )
                size += len(parts[-1])
            data = b"".join(parts)
            n = min(len(b), len(data))
            b[:n], self.buffer = data[:n], data[n:]
            return n

    def peak_for(rows: int) -> int:
        tracemalloc.start()
        scan = scan_csv(Generated(rows), [("ip", "IP4"), ("n", "INT4")])  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert scan.ok and scan.rows == rows
        return peak

    small, large = peak_for(5_000), peak_for(20_000)
    # Four times the rows, the same peak (about 760 KB either way, the read buffers mostly):
    # memory does not grow with the file. Holding the rows would add over a megabyte.
    assert large < small * 1.1 + 32 * 1024, (small, large)


def test_csv_key_duplicates_found_past_the_spill_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.spec import csvcheck

    monkeypatch.setattr(csvcheck, "_SPILL_AT", 10)
    rows = [f"10.0.0.{i},{i}" for i in range(50)] + ["10.0.0.3,99"]
    scan = _scan("\n".join(rows) + "\n", key_columns=[0])
    assert scan.errors == [(51, "duplicate key '10.0.0.3'")]  # type: ignore[attr-defined]


def _schema() -> dict[str, object]:
    """What ``reconciler schema`` prints (run in this process: the schema is the subject here)."""
    out = CliRunner().invoke(app, ["schema"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def test_schema_accepts_examples_and_rejects_type_errors() -> None:
    import jsonschema  # here, not at the top: 150 ms in every worker at collection

    schema = _schema()
    validator = jsonschema.Draft202012Validator(schema)
    for path in (ROOT / "specs").rglob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            errors = list(validator.iter_errors(document))
            assert not errors, (path, errors[0].message)
    type_errors = [
        "bad_column_type",
        "bad_key_type",
        "bad_visibility",
        "wrong_type_bool",
        "unknown_top_key",
        "unknown_source_key",
        "missing_query",
        "missing_columns",
        "bad_api_version",
        "unknown_kind",
        "unsafe_name",
        "unsafe_domain",
    ]
    for name in type_errors:
        path = ROOT / "tests" / "corpus" / "bad" / f"{name}.yaml"
        document = yaml.safe_load(path.read_text())
        assert list(validator.iter_errors(document)), name


def test_committed_schema_is_current() -> None:
    committed = json.loads((ROOT / "schema" / "spec.schema.json").read_text())
    assert committed == _schema(), "run: reconciler schema > schema/spec.schema.json"


def test_validate_does_not_import_network_modules() -> None:
    """validate loads no network module; the commands against a real endpoint load no emulator."""
    code = (
        "import sys; from reconciler.cli import main; sys.argv=['reconciler','validate','specs'];\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('httpx','deepdiff','starlette','uvicorn') if m in sys.modules))\n"
        "import reconciler.commands, reconciler.connect\n"
        "print('emulator', sorted(m for m in ('reconciler.emulator', 'starlette') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    validate, commands = out.stdout.strip().splitlines()[-2:]
    assert validate.endswith("[]"), out.stdout
    assert commands == "emulator []", out.stdout


def test_validate_paths_api(tmp_path: Path) -> None:
    write_lookup(tmp_path, "a.yaml", "x", "  staticQuery: {query: q}")
    result = validate_paths([str(tmp_path)])
    assert not result.errors and [lu.address for lu in result.lookups] == ["acme/x"]


# --- inputs that must never turn into a delete -------------------------------------------------


def test_symlinked_spec_folders_are_followed_once(tmp_path: Path) -> None:
    import os

    (tmp_path / ".git").mkdir()  # the links stay inside this repository
    elsewhere = tmp_path / "team_b"
    elsewhere.mkdir()
    write_lookup(elsewhere, "b.yaml", "from_link", "  staticQuery: {query: from a select b}")
    specs = tmp_path / "specs"
    specs.mkdir()
    write_lookup(specs, "a.yaml", "here", "  staticQuery: {query: from a select b}")
    os.symlink(elsewhere, specs / "team_b")
    os.symlink(specs, specs / "team_b_loop")  # a loop back to the root ends
    os.symlink(elsewhere, specs / "again")  # the same folder twice is read once
    result = load_specs([specs], env={})
    names = sorted(lookup.model.metadata.name for lookup in result.lookups)
    assert names == ["from_link", "here"] and not result.errors


@pytest.mark.parametrize("linked", ["file", "folder", "the specs folder itself"])
def test_a_spec_file_linking_outside_the_repository_is_not_read(
    tmp_path: Path, linked: str, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull request can add ``specs/x.yaml -> ~/.config/gh/hosts.yml``: what the target holds
    would reach the output as names, kinds and queries. It is an error naming the link, and the
    target is not read, unless --allow-outside (as for a csv.file)."""
    import os

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    secrets = tmp_path / "runner-home"
    secrets.mkdir()
    (secrets / "hosts.yml").write_text("kind: SECRET-TOKEN-7f1e\n")
    specs = repo / "specs"
    if linked == "the specs folder itself":
        os.symlink(secrets, specs)
    else:
        specs.mkdir()
        write_lookup(specs, "a.yaml", "here", "  staticQuery: {query: from a select b}")
        if linked == "file":
            os.symlink(secrets / "hosts.yml", specs / "x.yaml")
        else:
            os.symlink(secrets, specs / "team")
    monkeypatch.chdir(repo)
    refused = runner.invoke(app, ["validate", "specs"])
    assert refused.exit_code == 1, refused.output
    assert "outside the spec repository" in refused.stderr and "is not read" in refused.stderr
    assert "SECRET-TOKEN" not in refused.output
    allowed = runner.invoke(app, ["validate", "specs", "--allow-outside"])
    assert "SECRET-TOKEN-7f1e" in allowed.output  # read when asked to: its unknown kind is named


def test_an_unreadable_spec_folder_is_an_error(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    specs = tmp_path / "specs"
    (specs / "locked").mkdir(parents=True)
    write_lookup(specs, "a.yaml", "here", "  staticQuery: {query: from a select b}")
    write_lookup(specs / "locked", "b.yaml", "hidden", "  staticQuery: {query: from a select b}")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # root reads anything: refuse like chmod 000 would
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    result = runner.invoke(app, ["validate", str(specs)])
    assert result.exit_code == 1
    assert "locked: error: cannot read this folder: Permission denied" in result.stderr
    assert "prune" in result.stderr


def test_a_broken_symlink_under_the_specs_is_an_error(tmp_path: Path, runner: CliRunner) -> None:
    import os

    specs = tmp_path / "specs"
    specs.mkdir()
    write_lookup(specs, "a.yaml", "here", "  staticQuery: {query: from a select b}")
    os.symlink(tmp_path / "submodule-not-checked-out", specs / "team_c")
    result = runner.invoke(app, ["validate", str(specs)])
    assert (
        result.exit_code == 1
        and "team_c: error: cannot read this folder: a broken symlink" in result.stderr
    )


def test_yaml_syntax_error_points_where_the_unclosed_thing_began(
    tmp_path: Path, runner: CliRunner
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'apiVersion: reconciler/v1\nkind: Lookup\nmetadata:\n  domain: acme\n  name: "x\n'
        "spec:\n  staticQuery: {query: from a select b}\n"
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:5:9: error: YAML syntax error: while scanning a quoted scalar" in result.stderr
    other = tmp_path / "other.yaml"
    other.write_text("apiVersion: reconciler/v1\nkind: Lookup\nmetadata:\n  domain: a: b\n")
    result = runner.invoke(app, ["validate", str(other)])
    assert (
        f"{other}:4:12: error: YAML syntax error: mapping values are not allowed here"
        in result.stderr
    )


@pytest.mark.parametrize(
    ("column_type", "cell"),
    [
        ("INT4", "1_000"),
        ("INT4", "+7"),
        ("INT8", "\u0663\u0664"),  # Arabic-Indic digits
        ("FLOAT8", "nan"),
        ("FLOAT8", "infinity"),
        ("FLOAT4", "1_0.5"),
        ("TIMESTAMP", "\u00b2"),
        ("TIMESTAMP", "2026-02-30"),
        ("TIMESTAMP", "20260101T"),
        ("DURATION", "\u00b2"),
    ],
)
def test_cells_accept_only_devos_forms(column_type: str, cell: str) -> None:
    with pytest.raises(ValueError):
        parse_cell(column_type, cell)


@pytest.mark.parametrize(
    ("column_type", "cell"),
    [
        ("INT4", "-2147483648"),
        ("INT8", "42"),
        ("FLOAT8", "-1.5e-3"),
        ("FLOAT4", ".5"),
        ("TIMESTAMP", "1767225600000"),
        ("TIMESTAMP", "2026-01-31"),
        ("TIMESTAMP", "2026-01-31T10:00:00Z"),
        ("TIMESTAMP", "2026-01-31 10:00:00.123+02:00"),
        ("DURATION", "1h30m"),
    ],
)
def test_cells_in_devos_forms_are_accepted(column_type: str, cell: str) -> None:
    parse_cell(column_type, cell)


def _geo_scan(data: bytes, *, has_header: bool = True) -> object:
    return scan_csv(io.BytesIO(data), [("ip", "IP4"), ("country", "STRING")], has_header=has_header)


def test_a_csv_with_a_byte_order_mark_is_accepted() -> None:
    scan = _geo_scan(b"\xef\xbb\xbfip,country\n10.0.0.1,ES\n")
    assert scan.ok and scan.rows == 1 and scan.bom and scan.header == ["ip", "country"]  # type: ignore[attr-defined]


def test_an_empty_csv_that_should_have_a_header_is_an_error() -> None:
    scan = _geo_scan(b"")
    assert not scan.ok  # type: ignore[attr-defined]
    assert scan.errors == [(1, "the file is empty, but hasHeader: true expects a header line")]  # type: ignore[attr-defined]
    assert _geo_scan(b"", has_header=False).ok  # type: ignore[attr-defined]


def test_a_csv_outside_the_spec_repository_needs_allow_outside(
    tmp_path: Path, runner: CliRunner
) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "data").mkdir()
    (repo / "data" / "in.csv").write_text("a\n1\n")
    (tmp_path / "outside.csv").write_text("a\n1\n")
    specs = repo / "specs"
    specs.mkdir()
    csv = "  csv: {{file: {f}, hasHeader: true, columns: [{{name: a, type: INT4}}]}}"
    write_lookup(specs, "in.yaml", "inside", csv.format(f="../data/in.csv"))  # up, but inside
    write_lookup(specs, "out.yaml", "outside", csv.format(f="../../outside.csv"))
    write_lookup(specs, "etc.yaml", "passwd", csv.format(f="/etc/passwd"))
    result = runner.invoke(app, ["validate", str(specs)])
    assert result.exit_code == 1
    assert result.stderr.count("is outside the spec repository") == 2
    assert "out.yaml:5:" in result.stderr and "etc.yaml:5:" in result.stderr
    assert "in.yaml" not in result.stderr
    assert "root:" not in result.stderr  # nothing of /etc/passwd was read, let alone shown
    allowed = runner.invoke(app, ["validate", "--allow-outside", str(specs / "out.yaml")])
    assert allowed.exit_code == 0, allowed.stderr


def test_a_long_csv_scan_shows_progress_through_the_hook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command line passes its spinner as ``progress`` on a terminal; big scans run inside
    it (no global: the callback is an argument all the way down)."""
    from contextlib import contextmanager

    from reconciler.spec import csvcheck

    shown: list[tuple[str, int]] = []

    @contextmanager
    def progress(path: Path, size: int):  # type: ignore[no-untyped-def]
        shown.append((path.name, size))
        yield

    monkeypatch.setattr(csvcheck, "PROGRESS_MIN_BYTES", 10)
    (tmp_path / "geo.csv").write_text("10.0.0.1,ES\n10.0.0.2,US\n")
    write_lookup(
        tmp_path,
        "a.yaml",
        "geo",
        "  csv:\n    file: geo.csv\n    columns: [{name: ip, type: IP4}, {name: c}]",
    )
    assert not validate_paths([str(tmp_path)], progress=progress).errors
    assert shown == [("geo.csv", 24)]
    shown.clear()
    assert not validate_paths([str(tmp_path)]).errors and shown == []  # none given: none shown
    monkeypatch.setattr(csvcheck, "PROGRESS_MIN_BYTES", 1000)
    assert not validate_paths([str(tmp_path)], progress=progress).errors and shown == []


_YAML_CASES = [
    *sorted((ROOT / "specs").glob("*.yaml")),
    *sorted((ROOT / "tests" / "corpus" / "bad").glob("*.yaml")),
]


def _loaded(result: object) -> object:
    from reconciler.spec.loader import LoadResult

    assert isinstance(result, LoadResult)
    documents = [*result.lookups, *result.domains, *result.overlays]
    return (
        [(d.path, d.index, d.line, d.data, d.positions, d.model) for d in documents],
        result.diagnostics,
    )


def _converted(nodes: list[yaml.Node | None]) -> list[object]:
    """What the loader keeps of each document: its data, field positions and problems."""
    from reconciler.spec.loader import _Converter

    found: list[object] = []
    for node in nodes:
        converter = _Converter(Path("x.yaml"), {})
        data = None if node is None else converter.convert(node)
        found.append((data, converter.positions, converter.problems))
    return found


@pytest.mark.parametrize("case", _YAML_CASES, ids=[c.name for c in _YAML_CASES])
def test_libyaml_and_the_python_parser_load_the_same(
    case: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast composer changes nothing a user sees: same data, positions and diagnostics."""
    from reconciler.spec import loader

    env = {"TEST_S3_ACCESS": "a", "TEST_S3_SECRET": "b"}
    from reconciler.spec import yamlnodes

    assert issubclass(yamlnodes.FAST_LOADER, yaml.CSafeLoader)  # libyaml, tags remembered
    fast = _loaded(loader.load_file(case, env))
    monkeypatch.setattr(yamlnodes, "FAST_LOADER", yaml.SafeLoader)
    assert _loaded(loader.load_file(case, env)) == fast


def _known_leniency(text: str) -> bool:
    """Where libyaml and PyYAML both read a text but differently: the catalogue.

    Tabs as separation space (YAML allows them; PyYAML reads "a:\t1" otherwise or refuses it),
    and the non-specific tag "!" (a string for libyaml, as the YAML spec says; PyYAML resolves it
    like an untagged value). Found by sampling 400,000 texts of this alphabet; any other
    difference in reading fails the test below.
    """
    return "\t" in text or "!" in text


def _apart_only_at_empty_scalars(
    fast: list[yaml.Node | None], slow: list[yaml.Node | None]
) -> bool:
    """Whether two readings are one but for where an empty scalar starts: also in the catalogue.

    An empty node after "?" in a flow mapping ("{? }", "{? : }") is marked after the spaces that
    follow by libyaml and before them by PyYAML, one column apart; nothing else may differ (found
    by the test below, which it now compares node by node).
    """
    seen: set[tuple[int, int]] = set()

    def same(a: yaml.Node | None, b: yaml.Node | None) -> bool:
        if a is None or b is None:
            return a is b
        if (id(a), id(b)) in seen:  # an alias met again (or a recursive anchor)
            return True
        seen.add((id(a), id(b)))
        if type(a) is not type(b) or a.tag != b.tag:
            return False
        mark = (a.start_mark.line, a.start_mark.column) == (b.start_mark.line, b.start_mark.column)
        if isinstance(a, yaml.ScalarNode):
            # libyaml says '' for the plain style where PyYAML says None
            plain = (a.style or "") == (b.style or "")
            return a.value == b.value and plain and (mark or a.value == "")
        if not mark or len(a.value) != len(b.value):
            return False
        if isinstance(a, yaml.MappingNode):
            return all(
                same(k, j) and same(v, w) for (k, v), (j, w) in zip(a.value, b.value, strict=True)
            )
        return all(same(x, y) for x, y in zip(a.value, b.value, strict=True))

    return len(fast) == len(slow) and all(same(a, b) for a, b in zip(fast, slow, strict=True))


@settings(max_examples=1000)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}'\"#&*!|>,? \n\t0.~%@`")), max_size=40))
def test_libyaml_reads_text_as_the_python_parser_does(text: str) -> None:
    """On any text both parsers read, they read the same (the catalogue above aside).

    Where libyaml refuses, ``_compose_all`` asks PyYAML, so its error wording (or its reading)
    is the one used. Where only PyYAML refuses, libyaml is following the YAML spec where PyYAML
    is stricter (a comment right after a block header, "|#" or "|-#"; "?" inside a flow
    scalar, "{0?}"; tabs): libyaml's reading is the loader's, which is all that is asserted.
    """
    from reconciler.spec import yamlnodes

    try:
        fast_nodes = list(yaml.compose_all(text, Loader=yaml.CSafeLoader))
    except yaml.YAMLError:
        return
    fast = _converted(fast_nodes)
    assert _converted(yamlnodes.compose_all(text)) == fast
    try:
        slow_nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        slow = _converted(slow_nodes)
    except (yaml.YAMLError, RecursionError):
        return
    assert (
        fast == slow
        or _known_leniency(text)
        or _apart_only_at_empty_scalars(fast_nodes, slow_nodes)
    ), text


def test_an_empty_key_in_a_flow_mapping_is_the_one_difference_outside_the_text_catalogue() -> None:
    """The node comparison forgives the empty scalar's column, and nothing else."""
    for text, apart in [("{? }", True), ("{? : }", True), ("{? a}", False), ("{a: b}", False)]:
        fast = list(yaml.compose_all(text, Loader=yaml.CSafeLoader))
        slow = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
        assert _apart_only_at_empty_scalars(fast, slow), text
        assert (_converted(fast) != _converted(slow)) is apart, text
    fast = list(yaml.compose_all("{? : }", Loader=yaml.CSafeLoader))
    other = list(yaml.compose_all("{? : x}", Loader=yaml.SafeLoader))
    assert not _apart_only_at_empty_scalars(fast, other)  # a value that differs is not forgiven
    moved = list(yaml.compose_all("{ a: b}", Loader=yaml.SafeLoader))
    assert not _apart_only_at_empty_scalars(list(yaml.compose_all("{a: b}")), moved)


@st.composite
def _shared_trees(draw: st.DrawFn) -> Any:
    """Lists and mappings that reuse earlier ones (dumped as anchors and aliases): small bombs."""
    pool: list[Any] = ["x", 1]
    for _ in range(draw(st.integers(1, 8))):
        picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=5))
        if draw(st.booleans()):
            pool.append([pool[i] for i in picks])
        else:
            pool.append({f"k{n}": pool[i] for n, i in enumerate(picks)})
    return pool[-1]


@settings(max_examples=200)
@given(_shared_trees(), st.integers(1, 60), st.integers(1, 8))
def test_alias_bombs_are_refused_where_the_converter_would_stop(
    tree: Any, max_nodes: int, max_depth: int
) -> None:
    """The graph measure names the same node and reason as expanding the document would."""
    from reconciler.spec import loader, yamlnodes

    # Emitted by libyaml, with the same anchors and aliases as safe_dump (faster; not under test).
    text = yaml.dump({"spec": tree}, Dumper=yaml.CSafeDumper)
    [node] = yaml.compose_all(text, Loader=yaml.CSafeLoader)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(yamlnodes, "MAX_NODES", max_nodes)  # the converter's limits and the measure's
        patch.setattr(yamlnodes, "MAX_DEPTH", max_depth)
        patch.setattr(
            yamlnodes, "TOO_DEEP", f"document is nested more than {max_depth} levels deep"
        )
        try:
            loader._Converter(Path("x.yaml"), {}).convert(node)
            expanded = None
        except yamlnodes.TooLarge as exc:
            expanded = (exc.node, str(exc))
        found = yamlnodes.too_large(node)
    assert (None if found is None else (found.node, str(found))) == expanded


@pytest.mark.parametrize("limit", ["depth", "values"])
def test_without_anchors_the_converter_refuses_as_the_measure_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: str
) -> None:
    """A file with no anchor skips the graph measure: the converter's own refusal is the same
    diagnostic (message, line) as the measure gives when an anchor elsewhere makes it run."""
    from reconciler.spec import loader, yamlnodes

    if limit == "values":
        monkeypatch.setattr(yamlnodes, "MAX_NODES", 50)
        body = "spec:\n" + "".join(f"  k{i}: [1, 2]\n" for i in range(30))
    else:
        body = "spec:\n  x: " + "{a: " * 70 + "1" + "}" * 70 + "\n"
    first = ("apiVersion: reconciler/v1\nkind: Lookup\n" + body).count("\n")  # its last line
    diagnostics = []
    for other in ("", "---\napiVersion: reconciler/v1\nx: &one 1\ny: *one\n"):
        path = tmp_path / f"deep{len(diagnostics)}.yaml"
        path.write_text("apiVersion: reconciler/v1\nkind: Lookup\n" + body + other)
        found = [d for d in loader.load_file(path, {}).diagnostics if d.line and d.line <= first]
        diagnostics.append([(d.line, d.message) for d in found])
    assert diagnostics[0] == diagnostics[1] and len(diagnostics[0]) == 1, diagnostics
    [(_, message)] = diagnostics[0]
    assert ("too many values" if limit == "values" else "nested more than 64") in message


def test_a_recursive_anchor_is_refused_as_too_deep(tmp_path: Path) -> None:
    from reconciler.spec import loader

    path = tmp_path / "loop.yaml"
    path.write_text("apiVersion: reconciler/v1\nkind: Lookup\nspec: &a {x: *a}\n")
    [problem] = loader.load_file(path, {}).diagnostics
    assert "nested more than 64 levels deep" in problem.message and problem.line == 3


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("  staticQuery: {query: !!binary aGVsbG8=}", "the tag !!binary is not allowed"),
        ("  staticQuery: {query: !Ref other}", "the tag !Ref is not allowed"),
        ("  staticQuery: !!set {query: x}", "the tag !!set is not allowed"),
        ("  staticQuery: {query: x}\n  protect: !!int yes", "'yes' is not a value of !!int"),
        ("  staticQuery: {query: x}\n  =: 1", "unknown field '='"),  # "=" is !!value: a key
        # A date resolves to !!timestamp: a plain key, not a tag the author wrote.
        ("  staticQuery: {query: x}\n  2026-01-01: 1", "unknown field '2026-01-01'"),
        ("  staticQuery: {!!python/name:os.system query: x}", "the tag !!python/name:os.system"),
    ],
)
def test_tags_are_refused_by_name(tmp_path: Path, line: str, message: str) -> None:
    from reconciler.spec import loader

    path = tmp_path / "tagged.yaml"
    path.write_text(
        "apiVersion: reconciler/v1\nkind: Lookup\nmetadata: {domain: a, name: b}\nspec:\n" + line
    )
    found = loader.load_file(path, {}).diagnostics
    assert found and message in found[0].message and found[0].line == 5 + line.count("\n"), found


def test_plain_text_that_resolves_to_a_tag_is_read_as_written(tmp_path: Path) -> None:
    """A bare "=" (!!value) and a date (!!timestamp) are text the author wrote, not tags."""
    from reconciler.spec import loader

    path = tmp_path / "plain.yaml"
    path.write_text(
        "apiVersion: reconciler/v1\nkind: Lookup\nmetadata: {domain: a, name: b}\nspec:\n"
        "  periodicQuery: {query: =, startDate: 2026-01-01T00:00:00Z}\n"
    )
    result = loader.load_file(path, {})
    assert not result.diagnostics, result.diagnostics
    [lookup] = result.lookups
    block = lookup.model.spec.periodicQuery
    assert block is not None and block.query == "=" and block.startDate == "2026-01-01T00:00:00Z"


def test_remembered_tags_keep_quoting_apart() -> None:
    """The fast loader remembers each scalar's tag by its text and quoting: a quoted "true" or
    "1" stays text after a plain one was read as a bool or an int, and the other way round."""
    from reconciler.spec import yamlnodes

    text = 'a: true\nb: "true"\nc: true\nd: 1\ne: "1"\nf: 1\ng: ~\nh: "~"\n'
    for _ in range(2):  # the second round reads every tag from memory
        [node] = yamlnodes.compose_all(text)
        assert node is not None
        tags = {k.value: v.tag.rsplit(":", 1)[-1] for k, v in node.value}
        assert tags == {
            "a": "bool",
            "b": "str",
            "c": "bool",
            "d": "int",
            "e": "str",
            "f": "int",
            "g": "null",
            "h": "str",
        }


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["apply", "--auto-approve"]])
def test_a_spec_path_the_system_will_not_look_at_is_an_error_not_an_internal_one(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """A name too long for the file system raised from ``is_dir()`` (found by a fuzz of the
    command line): an error naming the path, exit 1, nothing sent."""
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*command, "x" * 300], env={"CI": ""})
    assert result.exit_code == 1, result.output
    assert "Error: cannot read xxxx" in result.stderr and "Internal error" not in result.output


def test_a_spec_file_that_cannot_be_looked_at_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file whose link target may not be looked at (PermissionError from stat, even for root
    under /proc) is named as unreadable, never a crash and never a silent skip."""
    specs = tmp_path / "specs"
    specs.mkdir()
    write_lookup(specs, "a.yaml", "here", "  staticQuery: {query: from a select b}")
    write_lookup(specs, "b.yaml", "there", "  staticQuery: {query: from a select b}")
    real_exists = Path.exists

    def exists(self: Path, *args: Any, **kwargs: Any) -> bool:
        if self.name == "b.yaml":
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", exists)
    result = load_specs([specs], env={})
    [error] = result.errors
    assert (
        error.path.endswith("b.yaml")
        and "cannot read this file: Permission denied" in error.message
    )


def test_a_file_name_with_a_line_break_cannot_start_a_line_of_output(
    tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull request names its files: ``x\\n::error::...yaml`` printed raw would start a line a
    CI runner reads as a workflow command. Each diagnostic is one line, the break escaped."""
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "x\n::add-mask::pwned.yaml").write_text("kind: [\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "specs"])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert not any(line.startswith("::") for line in lines), lines
    assert any("specs/x\\x0a::add-mask::pwned.yaml:2:1: error:" in line for line in lines), lines
