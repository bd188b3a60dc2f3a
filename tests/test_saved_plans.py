"""Saved plans keep Terraform's contract (issue 26): what was reviewed is what is applied, a
replacement is planned where a reviewer sees it, and a saved plan is shown without Devo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reconciler.cli import app as cli
from tests.planning import KINDS, SECRETS, Project, lookup_doc

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
