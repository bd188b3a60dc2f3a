"""Every bad spec in tests/corpus/bad fails validation with its file, line, field and message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.cli import app
from tests.support import CliRunner

CORPUS = Path(__file__).parent / "corpus" / "bad"
CASES = sorted(CORPUS.glob("*.yaml"))


def _expectations(path: Path) -> dict[str, str]:
    head = path.read_bytes().split(b"\n")[:3]
    found = {}
    for raw in head:
        match = re.match(rb"# expect-(\w+): ?(.*)", raw)
        assert match, f"{path.name} lacks its expect-* header"
        found[match.group(1).decode()] = match.group(2).decode()
    return found


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_spec_is_rejected_with_location(
    case: Path, runner: CliRunner, no_network: list[object]
) -> None:
    expected = _expectations(case)
    result = runner.invoke(app, ["validate", str(case)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert errors, result.stderr
    wanted_line = int(expected["line"])
    matching = [
        line
        for line in errors
        if expected["message"] in line
        and re.match(rf".*:{wanted_line}(:\d+)?: error: ", line)
        and (not expected["field"] or f": error: {expected['field']}: " in line)
    ]
    assert matching, f"expected line {wanted_line}, {expected}, got:\n{result.stderr}"
    assert no_network == []
