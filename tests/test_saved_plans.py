"""Saved plans keep Terraform's contract (issue 26): what was reviewed is what is applied, a
replacement is planned where a reviewer sees it, and a saved plan is shown without Devo."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reconciler.cli import app as cli
from tests.planning import KINDS, SECRETS, Project, lookup_doc
from tests.support import CliRunner

pytestmark = pytest.mark.anyio


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "CI": "",
        "RECONCILER_STATE": str(tmp_path / ".reconciler" / "state.json"),
        "RECONCILER_EMULATOR_DB": str(tmp_path / ".reconciler" / "emulator.db"),
        "RECONCILER_EMULATOR_CONFIG": '{"create_latency": 0, "deploy_latency": 0.02}',
        **SECRETS,
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(tmp_path)
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]), lookup_doc("b", KINDS["static"]))
    return project


@pytest.mark.parametrize(
    "flags",
    [
        ["--target", "acme/a"],
        ["--exclude", "acme/b"],
        ["--replace", "acme/a"],
        ["--max-destroy", "3"],
        ["--allow-mass-destroy"],
    ],
)
def test_apply_of_a_saved_plan_refuses_planning_flags(
    project: Project, tmp_path: Path, flags: list[str]
) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    plan_file = tmp_path / "plan.json"
    made = runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env)
    assert made.exit_code == 0, made.output
    refused = runner.invoke(cli, ["apply", "--plan", str(plan_file), *flags], env=env)
    assert refused.exit_code == 1, refused.output
    assert f"{flags[0]} cannot be combined with --plan: the saved plan decides" in refused.stderr
    assert f"reconciler plan {flags[0]} ... --out {plan_file}" in refused.stderr
    # Nothing was sent: the same plan still has both creates.
    again = runner.invoke(cli, ["plan", "--detailed-exitcode", str(project.specs)], env=env)
    assert again.exit_code == 2 and "Plan: 2 to add" in again.stdout


@pytest.mark.waits
def test_plan_replace_is_saved_and_applied_as_reviewed(project: Project, tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    assert (
        runner.invoke(cli, ["apply", "--auto-approve", str(project.specs)], env=env).exit_code == 0
    )
    plan_file = tmp_path / "plan.json"
    made = runner.invoke(
        cli, ["plan", str(project.specs), "--replace", "acme/a", "--out", str(plan_file)], env=env
    )
    assert made.exit_code == 0, made.output
    assert "replace requested (--replace)" in made.stdout  # the reviewer sees it
    saved = json.loads(plan_file.read_text())
    assert [c["address"] for c in saved["changes"] if c["action"] == "update"] == ["acme/a"]
    jobs_before = len(
        json.loads(runner.invoke(cli, ["jobs", "acme/a", "--format", "json"], env=env).stdout)[
            "jobs"
        ]
    )
    applied = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert applied.exit_code == 0, applied.output
    assert "1 changed" in applied.stdout
    jobs_after = len(
        json.loads(runner.invoke(cli, ["jobs", "acme/a", "--format", "json"], env=env).stdout)[
            "jobs"
        ]
    )
    assert jobs_after == jobs_before + 1


def test_show_renders_a_saved_plan_offline(
    project: Project, tmp_path: Path, no_network: list[object]
) -> None:
    plan_file = tmp_path / "plan.json"
    runner = CliRunner()
    env = _env(tmp_path)
    # The embedded emulator is in-process: even the plan makes no connection.
    made = runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env)
    assert made.exit_code == 0, made.output
    for output_format, needle in [
        ("text", "Plan: 2 to add, 0 to change, 0 to destroy."),
        ("markdown", "**Plan: 2 to add, 0 to change, 0 to destroy.**"),
        ("json", '"add": 2'),
        ("html", "<html"),
    ]:
        shown = runner.invoke(cli, ["show", str(plan_file), "--format", output_format], env={})
        assert shown.exit_code == 0, shown.output
        assert needle in shown.stdout, (output_format, shown.stdout[:300])
    assert not no_network
    (tmp_path / "other.json").write_text('{"format_version": "1.0", "changes": []}')
    wrong = runner.invoke(cli, ["show", str(tmp_path / "other.json")])
    assert wrong.exit_code == 1 and "is not a saved plan" in wrong.stderr


def test_a_stale_saved_plan_names_every_stale_lookup(project: Project, tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    plan_file = tmp_path / "plan.json"
    assert (
        runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env).exit_code
        == 0
    )
    project.write(
        lookup_doc("a", KINDS["static"].replace("from a", "from x")),
        lookup_doc("b", KINDS["static"].replace("from a", "from y")),
    )
    stale = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert stale.exit_code == 1
    assert "acme/a: its spec changed" in stale.stderr and "acme/b: its spec changed" in stale.stderr


@pytest.mark.waits
def test_state_rm_forgets_records_and_leaves_the_lookups(project: Project, tmp_path: Path) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    assert (
        runner.invoke(cli, ["apply", "--auto-approve", str(project.specs)], env=env).exit_code == 0
    )
    unknown = runner.invoke(cli, ["state", "rm", "acme/a", "acme/zz"], env=env)
    assert unknown.exit_code == 1 and "the state records no acme/zz" in unknown.stderr
    removed = runner.invoke(cli, ["state", "rm", "acme/a"], env=env)
    assert removed.exit_code == 0, removed.output
    shown = json.loads(runner.invoke(cli, ["state", "show", "--format", "json"], env=env).stdout)
    assert sorted(shown["lookups"]) == ["acme/b"]
    project.write(lookup_doc("b", KINDS["static"]))  # a's spec gone: a is unmanaged, not deleted
    plan = runner.invoke(cli, ["plan", "--detailed-exitcode", str(project.specs)], env=env)
    assert plan.exit_code == 0 and "acme/a" in plan.stdout, plan.output


def test_apply_json_carries_the_plans_warnings_with_or_without_changes(
    project: Project, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = _env(tmp_path)
    for _ in range(2):  # with changes, then with none: one shape
        done = runner.invoke(
            cli,
            [
                "apply",
                "--auto-approve",
                "--format",
                "json",
                "--target",
                "acme/nope*",
                str(project.specs),
            ],
            env=env,
        )
        assert done.exit_code == 0, done.output
        summary = json.loads(done.stdout.splitlines()[-1])
        assert summary["event"] == "summary" and set(summary) >= {"added", "failed", "warnings"}
        assert any("--target 'acme/nope*' matches no lookup" in w for w in summary["warnings"])


def test_history_help_names_every_action(runner: CliRunner) -> None:
    from reconciler.state.journal import ACTIONS

    shown = runner.invoke(cli, ["history", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    flat = " ".join(shown.stdout.split())
    for action in ACTIONS:
        assert action in flat, action


async def test_each_change_shows_its_domains_wave(tmp_path: Path) -> None:
    from reconciler.views.json import plan as render_json
    from reconciler.views.text import plan as render_text

    project = Project(tmp_path)
    project.write(
        lookup_doc("a", KINDS["static"]),
        lookup_doc("b", KINDS["static"], domain="globex"),
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: globex}\nspec: {wave: 2}\n",
    )
    plan = (await project.plan()).plan
    assert {c.address: c.wave for c in plan.changes} == {"acme/a": 0, "globex/b": 2}
    text = render_text(plan)
    assert "# globex/b will be created (not found) [wave 2]" in text
    assert "# acme/a will be created (not found) [wave 0]" in text
    assert {c["address"]: c["wave"] for c in json.loads(render_json(plan))["changes"]} == {
        "acme/a": 0,
        "globex/b": 2,
    }


async def test_a_run_waiting_for_the_lock_says_so_every_30_seconds(tmp_path: Path) -> None:
    from reconciler.state import StateLock
    from reconciler.state.lock import LockedError
    from tests.support import FakeClock

    location = str(tmp_path / "state.json")
    holder = StateLock(location, "alice@example.com")
    await holder.acquire()
    clock = FakeClock(start=0.0)
    said: list[str] = []
    waiter = StateLock(location, "bob")
    with pytest.raises(LockedError):
        await waiter.acquire(95, sleep=clock.sleep, clock=clock, waiting=said.append)
    assert len(said) == 4  # at once, then at 30, 60 and 90 s
    assert said[0].startswith("waiting for the state lock held by alice@example.com since ")
    assert f"(pid {os.getpid()} on " in said[0] and "95 s left of --lock-timeout" in said[0]


@pytest.mark.waits
def test_jobs_watch_gives_up_at_its_timeout(project: Project, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {**_env(tmp_path), "RECONCILER_EMULATOR_CONFIG": '{"create_latency": 3600}'}
    assert (
        runner.invoke(
            cli, ["apply", "--auto-approve", "--no-wait", str(project.specs)], env=env
        ).exit_code
        == 0
    )
    watched = runner.invoke(cli, ["jobs", "acme/a", "--watch", "--watch-timeout", "0.3"], env=env)
    assert watched.exit_code == 1, watched.output
    assert "acme/a:" in watched.stdout and "0.3" in watched.stdout


def test_a_saved_plan_is_a_typed_document() -> None:
    from reconciler.plan.saved import SavedPlan, stale_reasons

    for wrong in [None, [], {}, {"apply": []}, {"apply": {"kind": "other", "paths": []}}]:
        with pytest.raises(ValueError):
            SavedPlan.read(wrong)
    saved = SavedPlan.read(
        {
            "apply": {
                "kind": "reconciler-plan",
                "paths": ["specs"],
                "changes": [
                    {
                        "address": f"acme/{n}",
                        "action": "create",
                        "live_fingerprint": "absent",
                        "spec_hash": "h",
                    }
                    for n in "ab"
                ],
                "specs": {"acme/c": "x"},
            }
        }
    )
    # Nothing desired any more, c's spec gone: every reason, not the first.
    assert stale_reasons(saved, {}, {"acme/a": None, "acme/b": None}) == [
        "acme/a: its spec changed since the plan was made",
        "acme/b: its spec changed since the plan was made",
        "acme/c: its spec was removed since the plan was made",
    ]


def test_a_plan_that_cannot_be_saved_is_a_clear_error_after_the_plan(
    project: Project, tmp_path: Path
) -> None:
    """--out into a folder that does not exist (under a file): the plan is shown, then a clear
    error naming the file, exit 1; no internal error."""
    (tmp_path / "file").write_text("x")
    target = tmp_path / "file" / "plan.json"
    made = CliRunner().invoke(
        cli, ["plan", str(project.specs), "--out", str(target)], env=_env(tmp_path)
    )
    assert made.exit_code == 1, made.output
    assert "Plan: 2 to add" in made.stdout
    assert f"cannot write the plan to {target}" in made.stderr and "hint:" in made.stderr
    assert "Internal error" not in made.stderr
