"""Apply end to end: against the emulator served on loopback, with faults, crashes and refusals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli import app as cli
from reconciler.emulator import EmulatorConfig
from reconciler.errors import PlanError
from reconciler.plan.guards import Guards
from reconciler.plan.model import Action
from reconciler.settings import Settings
from tests.forkserver import Forks
from tests.planning import KINDS, SECRETS, Project, lookup_doc
from tests.support import ON_THE_FORKSERVER_WORKER, CliRunner, git, served

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


def loopback(project: Project, base: str) -> None:
    """Point the project at a served emulator instead of the in-process one."""
    project.settings = Settings(base, state_path=project.settings.state_path)
    project.transport = lambda: None  # type: ignore[assignment,method-assign,return-value]


def test_every_kind_created_updated_deleted_over_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = Project(tmp_path)
    with served(project.app) as base:
        loopback(project, base)

        async def scenario() -> None:
            names = sorted(KINDS)
            project.write(*(lookup_doc(n.replace("_", "-"), KINDS[n]) for n in names))
            assert await project.apply() == 0
            assert not (await project.plan()).plan.can_apply()
            documents = []
            for n in names:
                body = KINDS[n]
                body = (
                    body.replace("from a select", "from b select")
                    if "from a select" in body
                    else body
                )
                if n == "csv_s3":
                    body = body.replace("INT4", "INT8")
                if n == "csv_file":
                    body = body.replace(
                        "hasHeader: true", "hasHeader: true\n          skipEmptyLines: true"
                    )
                documents.append(lookup_doc(n.replace("_", "-"), body))
            project.write(*documents)
            plan = (await project.plan()).plan
            assert {c.action for c in plan.changes} == {Action.UPDATE}, [
                (c.address, c.reason) for c in plan.changes
            ]
            assert await project.apply() == 0
            assert not (await project.plan()).plan.can_apply()
            project.write(
                *(lookup_doc(n.replace("_", "-"), "", extra="state: absent") for n in names)
            )
            with pytest.raises(PlanError, match="7 of the 7 managed lookup"):
                await project.plan()  # all of the domain at once: the default guard stops it
            mass = Guards(allow_mass_destroy=True)
            plan = (await project.plan(guards=mass)).plan
            assert [c.action for c in plan.changes] == [Action.DELETE] * len(names)
            assert await project.apply(guards=mass) == 0
            plan = (await project.plan()).plan
            assert not plan.can_apply() and plan.unmanaged == ()

        asyncio.run(scenario())
    created = project.emulator.stats.created
    assert len(created) == len(KINDS) and set(created.values()) == {1}
    out = capsys.readouterr().out
    assert "Apply complete! Lookups: 0 added, 0 changed, 7 destroyed." in out


@pytest.mark.reliability
def test_faults_are_reported_precisely_and_a_second_apply_converges(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EmulatorConfig(
        create_latency=0.0,
        deploy_latency=0.05,
        delete_latency=0.05,
        rate_5xx=0.1,
        rate_429=0.1,
        retry_after=0.05,
        rate_drop=0.05,
        job_failure_pattern="fail-*",
        seed=11,
    )
    project = Project(tmp_path, config)
    names = [f"ok-{i}" for i in range(20)] + [f"fail-{i}" for i in range(3)]
    project.write(*(lookup_doc(n, KINDS["static"]) for n in names))
    with served(project.app) as base:
        loopback(project, base)
        assert asyncio.run(project.apply()) == 1
        out = capsys.readouterr().out
        for i in range(3):
            assert f"✗ acme/fail-{i} (create): failed: job " in out  # its id once
        assert out.count("deploy.err: Lookup deployment failed: injected failure") >= 3
        assert "Apply failed: 3 of 23 lookup(s) not done." in out
        project.emulator.config.job_failure_pattern = None
        assert asyncio.run(project.apply()) == 0
        assert not asyncio.run(project.plan()).plan.can_apply()
    stats = project.emulator.stats
    assert sum(stats.faults.values()) > 0
    # Every lookup really created once (failed creates leave nothing); no create met an existing one.
    assert project.emulator.store.successful_creates() == {f"acme/{n}": 1 for n in names}
    assert not stats.conflicts


async def test_conflict_becomes_update_and_missing_update_becomes_create(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("raced", KINDS["static"]))
    plan_run = await project.plan()  # says: create
    async with project.client() as client:  # someone else creates it meanwhile, differently
        await client.deploy(
            "POST", "deploy-static-query", "acme", "raced", {"query": "from other select user"}
        )
    from reconciler.apply.executor import Executor

    async with project.client() as client:
        executor = Executor(client, plan_run.workspace.by_address(), plan_run.state, env={})
        [outcome] = await executor.run(plan_run.plan)
    assert outcome.ok and outcome.effective is Action.UPDATE
    async with project.client() as client:
        meta = await client.get_lookup("acme", "raced")
        assert (
            meta.deployConfig
            and meta.deployConfig["recipe"]["source"]["query"] == "from a select user, role"
        )
        plan_run = await project.plan()
        project.write(lookup_doc("raced", KINDS["static"].replace("from a", "from c")))
        plan_run = await project.plan()  # says: update
        assert plan_run.plan.actionable[0].action is Action.UPDATE
        job = await client.delete("acme", "raced")
        assert job.job_id
        await client.wait_for_job("acme", "raced", job.job_id)
        executor = Executor(client, plan_run.workspace.by_address(), plan_run.state, env={})
        [outcome] = await executor.run(plan_run.plan)
    assert outcome.ok and outcome.effective is Action.CREATE


async def test_missing_secret_sends_nothing(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("s3", KINDS["csv_s3"]), lookup_doc("q", KINDS["static"]))
    from reconciler.errors import SettingsError

    with pytest.raises(SettingsError, match="TEST_S3_SECRET.*nothing was sent"):
        await project.apply(env={"TEST_S3_ACCESS": "x"})
    assert not project.emulator.stats.posts


async def test_no_wait_submits_and_json_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]), lookup_doc("b", KINDS["periodic"]))
    assert await project.apply(wait=False, output_format="json") == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("change_started") == 2 and kinds.count("change_finished") == 2
    assert "job_status" not in kinds
    finished = [e for e in events if e["event"] == "change_finished"]
    assert {e["status"] for e in finished} == {"submitted"} and all(e["job_id"] for e in finished)
    # Submitted, not known to be done: never counted as added (issue 26, item 6).
    assert events[-1]["event"] == "summary" and events[-1]["added"] == 0
    assert events[-1]["submitted"] == 2
    assert await project.apply(wait=False) == 0  # nothing to do now; and in text:
    project.write(lookup_doc("c", KINDS["static"]))
    capsys.readouterr()
    assert await project.apply(wait=False) == 0
    out = capsys.readouterr().out
    assert "Lookups: 1 added" not in out
    assert "1 submitted (jobs not followed: the next plan reads them" in out


async def test_job_timeout_is_reported_with_its_job_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = Project(tmp_path, EmulatorConfig(create_latency=30))
    project.write(lookup_doc("slow", KINDS["static"]))
    assert await project.apply(job_timeout=0.3) == 1
    out = capsys.readouterr().out
    assert "acme/slow (create): timed out: job " in out and "last status: create.start" in out
    # The job may still end either way: the record says it was submitted, with its job id, and
    # the next plan reads the job before it trusts the record.
    state = json.loads(project.settings.state_path.read_text())["lookups"]
    assert state["acme/slow"]["status"] == "submitted" and state["acme/slow"]["job_id"]
    plan = (await project.plan()).plan
    assert any("acme/slow: job" in w and "has not ended yet" in w for w in plan.warnings)


# --- the CLI: approval, saved plans, CI safety ----------------------------------------------------


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "RECONCILER_STATE": str(tmp_path / ".reconciler" / "state.json"),
        "RECONCILER_EMULATOR_DB": str(tmp_path / ".reconciler" / "emulator.db"),
        "CI": "",
        **SECRETS,
        **extra,
    }
    env["RECONCILER_EMULATOR_CONFIG"] = json.dumps(
        {"create_latency": 0, "deploy_latency": 0.02, "delete_latency": 0.02}
    )
    return env


@pytest.mark.reliability
def test_apply_refuses_without_terminal_or_approval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the state is the default one there: the emulator may be implicit
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    result = CliRunner().invoke(cli, ["apply", str(project.specs)], env=_cli_env(tmp_path))
    assert result.exit_code == 1
    assert "refusing to apply without approval" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.reliability
def test_ci_without_endpoint_refuses(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    for command in (["plan"], ["apply", "--auto-approve"], ["drift"]):
        result = CliRunner().invoke(
            cli, [*command, str(project.specs)], env=_cli_env(tmp_path, CI="true")
        )
        assert result.exit_code == 1 and "CI=true" in result.stderr
    ok = CliRunner().invoke(
        cli, ["plan", "--emulator", str(project.specs)], env=_cli_env(tmp_path, CI="true")
    )
    assert ok.exit_code == 0, ok.output


@pytest.mark.reliability
@pytest.mark.waits
def test_saved_plan_applies_and_refuses_when_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the state is the default one there: the emulator may be implicit
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]), lookup_doc("b", KINDS["static"]))
    env = _cli_env(tmp_path)
    runner = CliRunner()
    plan_file = tmp_path / "plan.json"
    made = runner.invoke(
        cli, ["plan", str(project.specs), "--out", str(plan_file), "--detailed-exitcode"], env=env
    )
    assert made.exit_code == 2, made.output
    assert made.stdout.rstrip().endswith("Plan: 2 to add, 0 to change, 0 to destroy.")
    assert f"Saved the plan to {plan_file}" in made.stderr
    saved = json.loads(plan_file.read_text())
    assert saved["summary"]["add"] == 2 and all(
        c["live_fingerprint"] == "absent" for c in saved["apply"]["changes"]
    )
    # An out-of-band create of one planned lookup makes the plan stale.
    other = runner.invoke(
        cli, ["apply", "--auto-approve", str(project.specs), "--target", "acme/a"], env=env
    )
    assert other.exit_code == 0, other.output
    stale = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert (
        stale.exit_code == 1
        and "stale" in stale.stderr
        and "acme/a: the live lookup changed" in stale.stderr
    )
    fresh = runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env)
    assert fresh.exit_code == 0
    applied = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert applied.exit_code == 0, applied.output
    assert "Apply complete! Lookups: 1 added, 0 changed, 0 destroyed." in applied.stdout
    after = runner.invoke(cli, ["plan", str(project.specs), "--detailed-exitcode"], env=env)
    assert after.exit_code == 0 and "No changes." in after.stdout
    # Editing a spec after planning also makes a plan stale.
    project.write(lookup_doc("a", KINDS["periodic"]), lookup_doc("b", KINDS["static"]))
    runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env)
    project.write(lookup_doc("a", KINDS["static"]), lookup_doc("b", KINDS["static"]))
    edited = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert edited.exit_code == 1 and "acme/a: its spec changed" in edited.stderr
    # So does editing a CSV a planned lookup uploads.
    project.write(lookup_doc("geo", KINDS["csv_file"]))
    runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env)
    csv = project.specs / "data" / "geo.csv"
    csv.write_text(csv.read_text() + "10.0.0.9,PT\n")
    changed_csv = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert changed_csv.exit_code == 1 and "acme/geo: its CSV file changed" in changed_csv.stderr


@pytest.mark.waits
def test_drift_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the state is the default one there: the emulator may be implicit
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    env = _cli_env(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["drift", str(project.specs)], env=env).exit_code == 2
    assert (
        runner.invoke(cli, ["apply", "--auto-approve", str(project.specs)], env=env).exit_code == 0
    )
    in_sync = runner.invoke(cli, ["drift", str(project.specs), "--format", "json"], env=env)
    assert in_sync.exit_code == 0 and json.loads(in_sync.stdout)["in_sync"] is True
    project.write(lookup_doc("a", KINDS["static"].replace("from a", "from z")))
    drifted = runner.invoke(cli, ["drift", str(project.specs), "--format", "markdown"], env=env)
    assert drifted.exit_code == 2 and "### reconciler drift" in drifted.stdout


# --- crash --------------------------------------------------------------------------------------


def _process_env(tmp_path: Path, base: str) -> dict[str, str]:
    """The environment of a ``reconciler`` child process pointed at a served emulator."""
    return {**os.environ, **_cli_env(tmp_path), "DEVO_LOOKUP_URL": base}


def _apply_command(forks: Forks, project: Project, *, parallelism: int) -> list[str]:
    """``reconciler apply --auto-approve`` of the project's specs, as a child process's argv: a
    fork of the ``forks`` server (tests/conftest.py), a process of its own that a signal ends as
    it would end the console script's, without its imports."""
    return [
        str(forks.folder / "reconciler"),
        "apply",
        "--auto-approve",
        "--parallelism",
        str(parallelism),
        str(project.specs),
    ]


@pytest.mark.reliability
@ON_THE_FORKSERVER_WORKER
@pytest.mark.parametrize("kill_after", [0.1, 1.0])
def test_sigkill_mid_apply_then_next_apply_converges(
    tmp_path: Path, kill_after: float, monkeypatch: pytest.MonkeyPatch, forks: Forks
) -> None:
    project = Project(
        tmp_path, EmulatorConfig(create_latency=0.3, deploy_latency=0.7, delete_latency=0.2)
    )
    names = [f"l{i:02d}" for i in range(24)]
    project.write(*(lookup_doc(n, KINDS["static"]) for n in names))
    with served(project.app) as base:
        env = _process_env(tmp_path, base)
        command = _apply_command(forks, project, parallelism=4)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path
        )
        deadline = time.monotonic() + 30
        while not project.emulator.stats.posts and time.monotonic() < deadline:
            time.sleep(0.02)  # the run holds the lock and is submitting
        [run] = forks.running()  # the apply's process
        time.sleep(kill_after)  # early: creates in flight; later: some jobs done and recorded
        os.kill(run, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
        # Jobs already started keep their schedule; the runs after the kill need no slow jobs.
        project.emulator.config.create_latency = project.emulator.config.deploy_latency = 0.02
        state_text = (
            project.settings.state_path.read_text()
            if project.settings.state_path.exists()
            else "{}"
        )
        json.loads(state_text)  # never torn
        # The runs after the kill: in this process (another pid, as a new run would be), except
        # the apply that must converge, which is a process of its own again.
        monkeypatch.chdir(tmp_path)
        runner = CliRunner()
        locked = runner.invoke(cli, command[1:], env=env)
        # The killed run's lock is still there: reported with its holder and the way out.
        assert locked.exit_code == 1, locked.output
        assert f"(pid {run})" in locked.stderr and "no longer running" in locked.stderr
        lock_id = locked.stderr.split("reconciler state unlock ")[1].split()[0]
        unlocked = runner.invoke(cli, ["state", "unlock", lock_id], env=env)
        assert unlocked.exit_code == 0, unlocked.stderr
        again = subprocess.run(
            command, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        assert again.returncode == 0, again.stdout + again.stderr
        check = runner.invoke(cli, ["plan", "--detailed-exitcode", str(project.specs)], env=env)
        assert check.exit_code == 0, check.output
    # Each lookup really created once, and no create met an existing lookup (a POST cut off by the
    # kill before its body arrived created nothing, and is rightly sent again).
    assert project.emulator.store.successful_creates() == {f"acme/{n}": 1 for n in names}
    assert not project.emulator.stats.conflicts
    if project.settings.state_path.exists():  # absent when the killed run had recorded nothing
        state = json.loads(project.settings.state_path.read_text())
        assert set(state["lookups"]) <= {f"acme/{n}" for n in names}


@pytest.mark.reliability
@ON_THE_FORKSERVER_WORKER
def test_ctrl_c_reports_jobs_in_flight_and_exits_130(tmp_path: Path, forks: Forks) -> None:
    project = Project(tmp_path, EmulatorConfig(create_latency=30, deploy_latency=1))
    names = [f"l{i}" for i in range(6)]
    project.write(*(lookup_doc(n, KINDS["static"]) for n in names))
    with served(project.app) as base:
        env = _process_env(tmp_path, base)
        command = _apply_command(forks, project, parallelism=2)
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        deadline = time.monotonic() + 20
        while len(project.emulator.stats.created) < len(names) and time.monotonic() < deadline:
            time.sleep(0.05)  # every create submitted; all jobs now run for 30 s
        process.send_signal(signal.SIGINT)  # the client passes it on to the apply's process
        out, err = process.communicate(timeout=20)
    assert process.returncode == 130, out + err
    assert "Traceback" not in out + err
    for name in names:
        assert f"✗ acme/{name} (create): interrupted: interrupted while job " in out
    assert "reconciler jobs acme/l0 --job " in out


async def test_a_csv_with_a_byte_order_mark_is_uploaded_without_it(tmp_path: Path) -> None:
    from tests.planning import KINDS as kinds
    from tests.planning import Project as project_type
    from tests.planning import lookup_doc as doc

    project = project_type(tmp_path)
    (project.specs / "data" / "geo.csv").write_bytes(
        b"\xef\xbb\xbfip,country\r\n10.0.0.1,ES\r\n10.0.0.2,US\r\n"
    )
    project.write(doc("excel", kinds["csv_file"]))
    assert await project.apply() == 0  # the emulator checks the header: it saw no mark
    async with project.client() as client:
        meta = await client.get_lookup("acme", "excel")
    assert meta.numEntries == 2 and [f.column for f in meta.fields] == ["ip", "country"]
    assert not (await project.plan()).plan.can_apply()


USAGE_ERRORS = [
    ["plan", "--formt", "json"],
    ["plan", "--tagret", "x"],
    ["drift", "--bogus"],
    ["apply", "--parallelism", "many"],
    ["no-such-command"],
]


def test_a_usage_error_exits_1_from_a_real_process(tmp_path: Path) -> None:
    """``python -m reconciler`` goes through ``main``: click's 2 for a usage error becomes 1."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "reconciler", *USAGE_ERRORS[0]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Error:" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", USAGE_ERRORS)
def test_usage_errors_exit_1_never_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every usage error, through the console script's entry point (in this process)."""
    from reconciler.cli import main

    monkeypatch.setattr("sys.argv", ["reconciler", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    err = capsys.readouterr().err
    assert exited.value.code == 1, (exited.value.code, err)
    assert "Error:" in err and "Traceback" not in err


def test_help_names_its_values_not_python_types() -> None:
    for command in (["plan"], ["drift"], ["apply"], ["import"], ["jobs"], ["emulator", "serve"]):
        text = CliRunner().invoke(cli, [*command, "--help"]).output
        assert "list[str]" not in text and "{domain}" not in text and "{address}" not in text, text


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ('{"version": 1, "lookups": {"acme/x": 5}}', "the record of acme/x is malformed"),
        (
            '{"version": 1, "lookups": {"acme/x": {"canonical": [1]}}}',
            "the record of acme/x is malformed: canonical: Input should be a valid dictionary",
        ),
        ('{"version": 1, "lookups": []}', "'lookups' is not an object"),
        (
            '{"version": 1, "lookups": {"acme/x": {"status": "maybe"}}}',
            "status: Input should be 'deployed' or 'submitted'",
        ),
    ],
)
def test_a_malformed_state_entry_is_a_clean_error(
    tmp_path: Path, state: str, expected: str
) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    project.settings.state_path.parent.mkdir(parents=True, exist_ok=True)
    project.settings.state_path.write_text(state)
    result = CliRunner().invoke(
        cli, ["plan", "--emulator", str(project.specs)], env=_cli_env(tmp_path)
    )
    assert result.exit_code == 1 and expected in result.stderr, result.stderr
    assert "Internal error" not in result.stderr and "hint:" in result.stderr


def test_a_state_folder_that_is_not_a_folder_is_a_clean_error(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]))
    project.settings.state_path.parent.write_text("not a folder")
    result = CliRunner().invoke(
        cli, ["plan", "--emulator", str(project.specs)], env=_cli_env(tmp_path)
    )
    assert result.exit_code == 1, result.stderr
    assert "cannot open the embedded emulator's database" in result.stderr
    assert "Internal error" not in result.stderr


@pytest.mark.waits
def test_a_saved_plan_refuses_any_changed_spec_even_a_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the state is the default one there: the emulator may be implicit
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]), lookup_doc("b", KINDS["static"]))
    env = _cli_env(tmp_path)
    runner = CliRunner()
    assert (
        runner.invoke(cli, ["apply", "--auto-approve", str(project.specs)], env=env).exit_code == 0
    )
    plan_file = tmp_path / "plan.json"
    # a changes; b is a no-op in the saved plan.
    project.write(
        lookup_doc("a", KINDS["static"].replace("from a", "from z")),
        lookup_doc("b", KINDS["static"]),
    )
    assert (
        runner.invoke(cli, ["plan", str(project.specs), "--out", str(plan_file)], env=env).exit_code
        == 0
    )
    project.write(
        lookup_doc("a", KINDS["static"].replace("from a", "from z")),
        lookup_doc("b", KINDS["static"].replace("from a", "from q")),
    )
    refused = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert refused.exit_code == 1
    assert "acme/b: its spec or CSV changed since the plan was made" in refused.stderr
    project.write(
        lookup_doc("a", KINDS["static"].replace("from a", "from z")),
        lookup_doc("b", KINDS["static"]),
        lookup_doc("c", KINDS["static"]),
    )
    added = runner.invoke(cli, ["apply", "--plan", str(plan_file)], env=env)
    assert added.exit_code == 1 and "acme/c: its spec was added" in added.stderr
    missing = runner.invoke(cli, ["apply", "--plan", str(tmp_path / "missing.json")], env=env)
    assert missing.exit_code == 1 and "missing.json not found" in missing.stderr


async def test_a_lookup_a_killed_run_created_is_recorded_by_the_next_apply(
    tmp_path: Path,
) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("a", KINDS["static"]), lookup_doc("b", KINDS["csv_file"]))
    assert await project.apply() == 0
    # As if the run was killed after its requests, before it wrote anything down:
    project.settings.state_path.unlink()
    (project.settings.state_path.parent / "journal.jsonl").unlink()
    # The query lookup is proven to match; the CSV's content cannot be proven (a row count is not
    # a content), so it is a change: the file is sent again, never "No changes".
    [change] = (await project.plan()).plan.actionable
    assert change.address == "acme/b" and change.csv is not None
    assert change.csv.source == "unproven"
    project.emulator.stats.routes.clear()
    assert await project.apply() == 0
    sent = [r for r in project.emulator.stats.routes if not r.startswith("GET")]
    assert sent and all("csv" in r for r in sent), sent  # a: nothing sent; b: its file
    state = json.loads(project.settings.state_path.read_text())["lookups"]
    assert set(state) == {"acme/a", "acme/b"}
    journal = (project.settings.state_path.parent / "journal.jsonl").read_text().splitlines()
    entries = {e["lookup"]: e for e in map(json.loads, journal)}
    assert "already matched its spec; recorded" in entries["a"]["message"]
    assert entries["b"]["action"] == "update"
    assert not (await project.plan()).plan.can_apply()


async def test_failures_name_the_job_once_and_plan_warns_of_unset_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EmulatorConfig(create_latency=0, deploy_latency=0.01, job_failure_pattern="bad")
    project = Project(tmp_path, config)
    project.write(lookup_doc("bad", KINDS["static"]), lookup_doc("s3", KINDS["csv_s3"]))
    plan = (await project.plan(env={})).plan
    assert any(
        "TEST_S3_ACCESS is not set (needed by acme/s3); apply will refuse" in w
        for w in plan.warnings
    )
    capsys.readouterr()
    assert await project.apply() == 1
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("  ✗ acme/bad")]
    job = line.split("job ")[1].split()[0].rstrip(":")
    assert line.count(job) == 1, line


async def test_json_reports_the_polls_of_a_failed_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EmulatorConfig(create_latency=0, deploy_latency=0.05, job_failure_pattern="bad")
    project = Project(tmp_path, config)
    project.write(lookup_doc("bad", KINDS["static"]))
    capsys.readouterr()
    assert await project.apply(output_format="json") == 1
    events = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]
    [finished] = [e for e in events if e["event"] == "change_finished"]
    assert finished["status"] == "failed" and finished["polls"] >= 1


def _big_csv(rows: int, *, changed: range = range(0), cut: int = 0, extra: int = 0) -> str:
    lines = ["ip,n,note"]
    for i in range(cut, rows):
        note = "CHANGED" if i in changed else f"row{i}"
        lines.append(f"10.{i // 65536}.{i // 256 % 256}.{i % 256},{i},{note}")
    lines += [f"172.16.{i // 256}.{i % 256},{i},new" for i in range(extra)]
    return "\n".join(lines) + "\n"


BIG = """
        csv:
          file: data/big.csv
          hasHeader: true
          upload: {upload}
          columns: [{{name: ip, type: IP4}}, {{name: n, type: INT8}}, {{name: note, type: STRING}}]
          key: {{type: column, column: ip}}
"""


def _big_project(tmp_path: Path, upload: str, rows: int) -> tuple[Project, Path]:
    """A csv.file lookup of ``rows`` rows, committed to git (so a delta can find it), applied."""
    project = Project(tmp_path, EmulatorConfig(create_latency=0, deploy_latency=0.01))
    big = project.specs / "data" / "big.csv"
    big.write_text(_big_csv(rows))
    project.write(lookup_doc("big", BIG.format(upload=upload)))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "specs")
    git(tmp_path, "commit", "-q", "-m", "big")
    return project, big


@pytest.mark.parametrize("engine", ["duckdb", "python"])
@pytest.mark.parametrize("upload", ["auto", "full"])
async def test_a_small_change_to_a_big_csv_is_sent_as_a_delta(
    tmp_path: Path, upload: str, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 rows through either engine: DuckDB takes files from ENGINE_MIN_BYTES (1 MiB, about
    41,000 of these rows); lowering the threshold sends this file through it, and a spy proves
    which engine read the two versions. The delta is 30 rows: under 1% of the file's bytes."""
    from reconciler.spec import csvengine

    ran: list[str] = []
    duckdb_delta = csvengine.keyed_delta

    def spy(*args: Any) -> Any:
        ran.append("duckdb")
        return duckdb_delta(*args)

    monkeypatch.setattr(csvengine, "keyed_delta", spy)
    if engine == "duckdb":
        monkeypatch.setattr(csvengine, "ENGINE_MIN_BYTES", 64 * 1024)
    rows = 10_000
    project, big = _big_project(tmp_path, upload, rows)
    assert await project.apply() == 0
    # 10 rows changed, 5 removed (the first five), 5 added.
    big.write_text(_big_csv(rows, changed=range(100, 110), cut=5, extra=5))
    change = (await project.plan()).plan.actionable[0]
    assert change.csv is not None
    assert (change.csv.added, change.csv.removed, change.csv.changed) == (5, 5, 10)
    assert ran == (["duckdb"] if engine == "duckdb" else [])
    project.emulator.stats.bytes_in.clear()
    project.emulator.stats.routes.clear()
    assert await project.apply() == 0
    sent = project.emulator.stats.bytes_in["PUT /lookup/{domain}/{name}/deploy-csv"]
    size = big.stat().st_size
    if upload == "auto":
        assert change.csv.strategy == "delta" and change.csv.send_rows == 30
        assert project.emulator.stats.routes["PUT /lookup/{domain}/{name}/deploy-csv"] == 2
        assert sent < 0.01 * size, (sent, size)
    else:
        assert change.csv.strategy == "full" and sent > size
    async with project.client() as client:
        meta = await client.get_lookup("acme", "big")
    assert meta.numEntries == rows
    held = project.emulator.store.rows_of("acme", "big")
    assert len(held) == rows and "10.0.0.100,100,CHANGED" in held
    assert "172.16.0.4,4,new" in held and "10.0.0.0,0,row0" not in held
    assert not (await project.plan()).plan.can_apply()


async def test_a_deltas_scratch_folder_is_the_callers_to_remove_from_the_moment_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delta_files hands its folder over before any work: an apply interrupted while the delta
    is worked out in its thread (or a failure there) leaves nothing behind in the temp folder."""
    from reconciler.apply.delta import delta_files
    from reconciler.engine import load_workspace
    from reconciler.plan import rows
    from reconciler.state import State
    from reconciler.state.snapshots import Snapshots

    project, big = _big_project(tmp_path, "auto", 2_000)
    assert await project.apply() == 0
    big.write_text(_big_csv(2_000, cut=5, extra=5))
    [want] = load_workspace([str(project.specs)]).desired
    location = str(project.settings.state_path)
    record = State.load(location).lookups["acme/big"].csv
    assert record is not None
    scratch: list[Path] = []
    try:
        files = delta_files(record, want, Snapshots(location), scratch)
        [folder] = scratch
        assert files and all(path.parent == folder and path.exists() for _, path in files)

        def interrupted(*args: Any) -> Any:
            raise KeyboardInterrupt

        monkeypatch.setattr(rows, "row_delta", interrupted)
        with pytest.raises(KeyboardInterrupt):
            delta_files(record, want, Snapshots(location), scratch)
        assert len(scratch) == 2 and scratch[1].is_dir()  # the caller's to remove, as the first
    finally:  # the caller's part, which this test plays: two folders a run were left in /tmp
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)


async def test_an_interrupted_delta_is_repaired_with_the_whole_file(tmp_path: Path) -> None:
    project, big = _big_project(tmp_path, "delta", 2_000)
    assert await project.apply() == 0
    big.write_text(_big_csv(2_000, cut=5, extra=5))
    # The del upload goes through; the add upload's job fails.
    calls = {"n": 0}
    original = project.emulator.schedule

    def schedule(action: str, name: str, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            return [(0.0, "create.start", "s"), (0.0, "create.err", "Lookup creation failed")]
        return original(action, name, **kw)  # type: ignore[arg-type]

    project.emulator.schedule = schedule
    assert await project.apply() == 1
    project.emulator.schedule = original
    change = (await project.plan()).plan.actionable[0]
    assert change.csv is not None and change.csv.strategy == "full"
    assert change.csv.note and "interrupted delta" in change.csv.note
    assert await project.apply() == 0
    assert len(project.emulator.store.rows_of("acme", "big")) == 2_000
    assert not (await project.plan()).plan.can_apply()


async def test_after_a_delta_a_plan_without_state_sends_the_file(tmp_path: Path) -> None:
    project, big = _big_project(tmp_path, "delta", 1_000)
    assert await project.apply() == 0
    big.write_text(_big_csv(1_000, changed=range(3)))
    assert (await project.plan()).plan.actionable[0].csv.strategy == "delta"  # type: ignore[union-attr]
    assert await project.apply() == 0
    project.settings.state_path.unlink()  # the live recipe now says append: true
    # The config still matches (the append of the delta is not a drift), but without the record
    # nothing proves the rows: the whole file is sent, once.
    [change] = (await project.plan()).plan.actionable
    assert change.csv is not None and change.csv.source == "unproven"
    assert change.csv.strategy == "full" and not change.diff
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()


async def test_apply_takes_its_time_from_the_clock_it_is_given(tmp_path: Path) -> None:
    """Durations, records and journal entries read the injected clock, and job polls wait on it:
    a twenty-second job takes no real time when the clock jumps on every sleep.

    The real time is bounded at half the job's: a one-lookup apply takes 0.05 s, and a run of
    the whole suite under ``strace -f`` (~2.5 times slower) still has room to spare. With a 2 s
    job and a 1.5 s bound, this was the suite's tightest wall-clock bound by far, and the
    likeliest cause of a failure seen once under strace whose test went unrecorded."""
    from datetime import UTC, datetime, timedelta

    from reconciler.client import PollPolicy
    from reconciler.state import State
    from reconciler.state.journal import Journal

    project = Project(
        tmp_path, EmulatorConfig(create_latency=0.0, deploy_latency=20.0, delete_latency=0.0)
    )
    project.clock.offset = 400 * 86_400.0  # the clock runs 400 days ahead of the machine's
    project.write(lookup_doc("one", KINDS["static"]))
    started = time.monotonic()
    # Polls at 0.25, 0.75, 1.75, ... 23.75 s of the jumping clock: seven, not FAST_POLL's 400.
    polls = PollPolicy(initial=0.25, factor=2.0, maximum=8.0, settle=0.5)
    assert await project.apply(poll=polls) == 0
    assert time.monotonic() - started < 10, "the job's 20 s were waited for, not jumped"
    assert sum(project.clock.slept) > 15  # the polls jumped over (most of) the job
    ahead = datetime.now(UTC) + timedelta(days=400)

    def near_ahead(stamp: str | None) -> bool:
        return stamp is not None and abs(datetime.fromisoformat(stamp) - ahead).total_seconds() < 60

    record = State.load(str(project.settings.state_path)).lookups["acme/one"]
    assert near_ahead(record.applied_at), record.applied_at
    (entry,) = list(Journal.for_state(str(project.settings.state_path)).entries())
    assert near_ahead(entry.time) and entry.action == "create", entry.time
