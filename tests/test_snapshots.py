"""Row diffs and delta uploads without git history (issue 28): the content apply sent is kept beside
the state, so a feed never committed, a shallow clone and a rewritten history all get a delta."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reconciler.cli import app as cli
from reconciler.state import State
from reconciler.state.snapshots import Snapshots
from tests.planning import Project, lookup_doc
from tests.support import CliRunner, git

pytestmark = pytest.mark.anyio

FEED = """
    csv:
      file: data/feed.csv
      hasHeader: true
      columns: [{name: ip, type: IP4}, {name: score, type: INT4}]
      key: {type: column, column: ip}
"""


def feed(rows: int, *, changed: range = range(0), added: int = 0, removed: int = 0) -> str:
    """``rows`` rows keyed by ip; ``changed`` get another score, the first ``removed`` go, and
    ``added`` new keys come at the end."""
    lines = ["ip,score"]
    for i in range(removed, rows):
        lines.append(
            f"10.{i // 65536}.{i // 256 % 256}.{i % 256},{(i * 7) % 100 + (50 if i in changed else 0)}"
        )
    for i in range(rows, rows + added):
        lines.append(f"10.{i // 65536}.{i // 256 % 256}.{i % 256},1")
    return "\n".join(lines) + "\n"


def csv_bytes(project: Project) -> int:
    return sum(v for k, v in project.emulator.stats.bytes_in.items() if "deploy-csv" in k)


async def applied_then_edited(project: Project, rows: int) -> tuple[Path, int]:
    """The feed applied once, then edited: 10 rows changed, 5 added, 5 removed."""
    data = project.specs / "data" / "feed.csv"
    data.write_text(feed(rows))
    project.write(lookup_doc("feed", FEED))
    assert await project.apply() == 0
    data.write_text(feed(rows, changed=range(100, 110), added=5, removed=5))
    return data, data.stat().st_size


async def second_apply_is_a_delta(project: Project, data: Path, size: int) -> None:
    [change] = (await project.plan()).plan.actionable
    assert change.csv is not None and change.csv.strategy == "delta", change.csv
    assert (change.csv.added, change.csv.removed, change.csv.changed) == (5, 5, 10)
    before = csv_bytes(project)
    assert await project.apply() == 0
    sent = csv_bytes(project) - before
    assert sent < 0.05 * size, (sent, size)
    assert not (await project.plan()).plan.can_apply()
    held = sorted(project.emulator.store.rows_of("acme", "feed"))
    assert held == sorted(data.read_text().splitlines()[1:])


async def test_a_feed_never_committed_is_sent_as_a_delta(tmp_path: Path) -> None:
    """The issue's figure: 200,000 rows, 10 changed, 5 added, 5 removed, no git at all."""
    project = Project(tmp_path)
    data, size = await applied_then_edited(project, 200_000)
    assert subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode
    await second_apply_is_a_delta(project, data, size)


async def test_a_shallow_clone_gets_a_delta(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    project = Project(origin)
    # The figure is the test above; a shallow clone changes where the old rows come
    # from (the snapshot, not git), not how many there are.
    data, size = await applied_then_edited(project, 20_000)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "the edit")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(clone)],
        check=True,
        capture_output=True,
    )
    project.specs = clone / "specs"
    await second_apply_is_a_delta(project, project.specs / "data" / "feed.csv", size)


async def test_a_rewritten_history_gets_a_delta(tmp_path: Path) -> None:
    project = Project(tmp_path)
    git(tmp_path, "init", "-q")
    data = project.specs / "data" / "feed.csv"
    data.write_text(feed(5_000))
    project.write(lookup_doc("feed", FEED))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "one")
    assert await project.apply() == 0  # records commit "one"
    data.write_text(feed(5_000, changed=range(100, 110), added=5, removed=5))
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "--amend", "-m", "one, squashed")  # "one" is gone
    git(tmp_path, "reflog", "expire", "--expire=now", "--all")
    git(tmp_path, "gc", "-q", "--prune=now")
    await second_apply_is_a_delta(project, data, data.stat().st_size)


async def test_snapshots_no_record_names_are_collected_and_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = Project(tmp_path)
    data = project.specs / "data" / "feed.csv"
    data.write_text(feed(300))
    project.write(lookup_doc("feed", FEED))
    assert await project.apply() == 0
    location = str(project.settings.state_path)
    first = set(Snapshots(location).sizes())
    [sha] = first
    assert State.load(location).lookups["acme/feed"].csv.sha256 == sha  # type: ignore[union-attr]
    data.write_text(feed(300, changed=range(3)))
    assert await project.apply() == 0
    kept = Snapshots(location).sizes()
    assert sha not in kept and len(kept) == 1  # the old content went with its last record
    runner = CliRunner()
    shown = runner.invoke(cli, ["state", "show", "--state", location, "--format", "json"])
    [listed] = json.loads(shown.stdout)["snapshots"]
    assert listed == {"sha256": next(iter(kept)), "bytes": next(iter(kept.values()))}
    text = runner.invoke(cli, ["state", "show", "--state", location]).stdout
    assert "1 CSV snapshot(s)" in text and next(iter(kept))[:12] in text


async def test_state_migrate_takes_the_snapshots_along(tmp_path: Path) -> None:
    from reconciler.state import migrate

    project = Project(tmp_path)
    data = project.specs / "data" / "feed.csv"
    data.write_text(feed(300))
    project.write(lookup_doc("feed", FEED))
    assert await project.apply() == 0
    target = str(tmp_path / "moved") + "/"
    migrate(str(project.settings.state_path), target)
    assert Snapshots(target).sizes() == Snapshots(str(project.settings.state_path)).sizes() != {}
    # Planned from the new location, the edit is still a delta: the rows last sent came along.
    project.settings = type(project.settings)(
        project.settings.base_url, state_path=Path(target) / "state.json"
    )
    data.write_text(feed(300, changed=range(3)))
    [change] = (await project.plan()).plan.actionable
    assert change.csv is not None and change.csv.changed == 3


async def test_a_saved_plans_csv_change_is_applied_as_the_delta_it_shows(tmp_path: Path) -> None:
    """``apply --plan`` sends what the reviewed plan said (a delta of 20 rows), not the file."""
    from reconciler.commands import ApplyRequest, run_apply, run_plan
    from tests.planning import FAST_POLL, SECRETS

    project = Project(tmp_path)
    data, size = await applied_then_edited(project, 20_000)
    plan_file = tmp_path / "plan.json"
    made = await run_plan(
        project.settings, [str(project.specs)], out=plan_file, transport=project.transport()
    )
    assert made.code == 0, made.stderr
    [change] = json.loads(plan_file.read_text())["changes"]
    assert change["csv"]["strategy"] == "delta", change["csv"]
    before = csv_bytes(project)
    request = ApplyRequest(
        plan_file=plan_file,
        auto_approve=True,
        transport=project.transport(),
        env=dict(SECRETS),
        poll=FAST_POLL,
        clock=project.clock.clock(),
    )
    applied = await run_apply(project.settings, [], request)
    assert applied.code == 0, applied.stderr
    sent = csv_bytes(project) - before
    assert sent < 0.05 * size, (sent, size)
    held = sorted(project.emulator.store.rows_of("acme", "feed"))
    assert held == sorted(data.read_text().splitlines()[1:])
    assert not (await project.plan()).plan.can_apply()


@pytest.mark.parametrize("edited", [False, True])
@pytest.mark.parametrize("sha256", ["not-a-sha256", "", "F" * 64])
async def test_a_record_whose_sha256_is_not_one_is_a_change_sent_whole(
    tmp_path: Path, sha256: str, edited: bool
) -> None:
    """A state record edited by hand (or by another tool) names no content: the plan cannot prove
    what Devo holds, so the CSV is a change, sent whole (it was an internal error of the snapshot
    lookup); state migrate takes the state along all the same."""
    from reconciler.state.records import migrate

    project = Project(tmp_path)
    data, _ = await applied_then_edited(project, 300)
    if not edited:
        data.write_text(feed(300))  # the content last applied, unchanged
    state_file = project.settings.state_path
    document = json.loads(state_file.read_text())
    document["lookups"]["acme/feed"]["csv"]["sha256"] = sha256
    state_file.write_text(json.dumps(document))
    [change] = (await project.plan()).plan.actionable
    assert change.csv is not None and change.csv.strategy == "full", change.csv
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()
    held = sorted(project.emulator.store.rows_of("acme", "feed"))
    assert held == sorted(data.read_text().splitlines()[1:])
    document = json.loads(state_file.read_text())
    document["lookups"]["acme/feed"]["csv"]["sha256"] = sha256
    state_file.write_text(json.dumps(document))
    migrate(str(state_file), str(tmp_path / "elsewhere" / "state.json"))
