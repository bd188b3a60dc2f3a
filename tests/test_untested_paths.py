"""Paths no test took before (issue 27, item 6): --no-wait across waves, a state that keeps
changing under a writer, RECONCILER_JOURNAL, and RECONCILER_DEBUG's traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli import app as cli
from reconciler.errors import ReconcilerError, StateError
from reconciler.state import LookupState, State
from reconciler.state.backends import Precondition
from tests.planning import KINDS, Project, lookup_doc
from tests.support import CliRunner

pytestmark = pytest.mark.anyio


async def test_no_wait_is_refused_when_the_plan_spans_waves(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(
        lookup_doc("a", KINDS["static"]),
        lookup_doc("b", KINDS["static"], domain="globex"),
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: globex}\nspec: {wave: 1}\n",
    )
    with pytest.raises(ReconcilerError, match="--no-wait cannot be used with several waves"):
        await project.apply(wait=False)
    assert project.emulator.store.get("acme", "a") is None  # nothing was sent


def test_a_state_that_keeps_changing_is_an_error_not_a_lost_record(tmp_path: Path) -> None:
    state = State.load(str(tmp_path / "state.json"))
    state.record("acme/a", LookupState(kind="staticQuery", canonical={"i": 1}))
    backend = state.backend
    tries = []

    def always_moved(
        key: str, data: bytes, *, create: bool = False, etag: str | None = None
    ) -> str:
        tries.append(key)
        raise Precondition(key)

    backend.write = always_moved  # type: ignore[method-assign]
    with pytest.raises(StateError, match="kept changing while this run wrote it"):
        state.commit(attempts=3)
    assert len(tries) == 3
    # The record is still in the run's log: the next load replays it.
    assert "acme/a" in State.load(str(tmp_path / "state.json")).lookups


@pytest.mark.waits
def test_the_journal_goes_where_reconciler_journal_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    elsewhere = tmp_path / "audit" / "lookups.jsonl"
    env = {
        "CI": "",
        "RECONCILER_JOURNAL": str(elsewhere),
        "RECONCILER_EMULATOR_DB": str(tmp_path / "emulator.db"),
    }
    runner = CliRunner()
    done = runner.invoke(
        cli, ["apply", "--emulator", "--auto-approve", str(project.specs)], env=env
    )
    assert done.exit_code == 0, done.output
    [entry] = [json.loads(line) for line in elsewhere.read_text().splitlines()]
    assert entry["lookup"] == "a" and entry["action"] == "create"
    assert not (tmp_path / ".reconciler" / "journal.jsonl").exists()
    history = runner.invoke(cli, ["history", "--format", "json"], env=env)
    assert json.loads(history.stdout)["totalResults"] == 1


def test_reconciler_debug_shows_the_traceback_of_an_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reconciler import commands

    def broken(*args: object, **kwargs: object) -> int:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands, "run_show", broken)
    (tmp_path / "plan.json").write_text("{}")
    runner = CliRunner()
    plain = runner.invoke(cli, ["show", str(tmp_path / "plan.json")])
    assert plain.exit_code == 1 and "Internal error: ZeroDivisionError: a bug" in plain.stderr
    assert "RECONCILER_DEBUG=1" in plain.stderr and "Traceback" not in plain.output
    debug = runner.invoke(cli, ["show", str(tmp_path / "plan.json")], env={"RECONCILER_DEBUG": "1"})
    assert isinstance(debug.exception, ZeroDivisionError)  # raised, with its traceback
