"""The journal: what apply writes, and history's pages, filters and damaged lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.cli_options import emit
from reconciler.errors import SettingsError
from reconciler.state.journal import HistoryQuery, Journal, JournalEntry, query
from tests.planning import KINDS, Project, lookup_doc

pytestmark = pytest.mark.anyio


def _entries(journal: Journal, n: int) -> list[str]:
    ids = []
    for i in range(n):
        entry = JournalEntry(
            id=f"e{i}",
            time="",
            timestamp=1_000_000 + i * 1000,
            actor="ci",
            domain="acme" if i % 2 else "beta",
            lookup=f"l{i % 5}",
            action=["create", "update", "delete"][i % 3],
            outcome="done",
            message="",
            jobId=None,
            commit=None,
            payload={"previous": {}, "additions": {}, "deletions": {}},
        )
        journal.append(entry)
        ids.append(entry.id)
    return ids


@given(n=st.integers(0, 40), page=st.integers(1, 9))
def test_history_pages_return_each_entry_once(n: int, page: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        journal = Journal(Path(folder) / "journal.jsonl")
        ids = _entries(journal, n)
        seen: list[str] = []
        offset = 0
        while True:
            result = query(journal, HistoryQuery(offset=offset, page_size=page))
            assert result["totalResults"] == n and result["offset"] == offset
            if not result["results"]:
                break
            seen += [r["id"] for r in result["results"]]
            offset += page
        assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
        assert seen == list(reversed(ids))  # newest first


def test_history_filters(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    _entries(journal, 30)
    assert query(journal, HistoryQuery(domain="acme"))["totalResults"] == 15
    assert query(journal, HistoryQuery(action="delete"))["totalResults"] == 10
    assert query(journal, HistoryQuery(name="l1"))["totalResults"] == 6
    assert query(journal, HistoryQuery(name="acme/l1"))["totalResults"] == 3
    window = query(journal, HistoryQuery(since=1_005_000, until=1_010_000))
    assert [r["id"] for r in window["results"]] == [f"e{i}" for i in range(9, 4, -1)]
    with (tmp_path / "journal.jsonl").open("a") as handle:
        handle.write('{"torn": ')  # a crash mid-append loses only that line
    assert query(journal, HistoryQuery())["totalResults"] == 30


async def test_apply_writes_the_journal(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    assert await project.apply() == 0
    project.write(lookup_doc("a", KINDS["static"].replace("from a", "from b")))
    assert await project.apply() == 0
    journal = Journal(tmp_path / ".reconciler" / "journal.jsonl")
    entries = list(journal.entries())
    assert [(e.action, e.outcome) for e in entries] == [("create", "done"), ("update", "done")]
    update = entries[1].payload
    assert update["previous"] == {"recipe.source.query": "from a select user, role"}
    assert update["additions"] == {"recipe.source.query": "from b select user, role"}
    assert entries[1].jobId


def test_history_skips_lines_that_are_not_entries_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.browse import run_history

    state = tmp_path / ".reconciler" / "state.json"
    state.parent.mkdir()
    good = {
        "id": "1",
        "time": "2026-01-02T00:00:00+00:00",
        "timestamp": 1767312000000,
        "actor": "ci",
        "domain": "acme",
        "lookup": "x",
        "action": "delete",
        "outcome": "done",
        "message": "",
        "jobId": None,
        "commit": None,
        "payload": {},
    }
    lines = [
        json.dumps(good),
        json.dumps({"time": "2026-01-02"}),  # valid JSON, not an entry
        "[1, 2]",
        json.dumps({**good, "timestamp": "soon"}),
        '{"torn": ',
    ]
    (state.parent / "journal.jsonl").write_text("\n".join(lines) + "\n")
    assert emit(run_history(state, action="destroy", output_format="json")) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["totalResults"] == 1  # the plan's word finds the delete
    assert "skipped 4 line(s) that are not journal entries (line 2, 3, 4, 5)" in captured.err
    with pytest.raises(SettingsError, match="--action 'remove' is not an action"):
        run_history(state, action="remove")
