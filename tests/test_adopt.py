"""Import, jobs and history: adopting existing lookups and auditing what apply did."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.browse import run_import, run_jobs
from reconciler.cli_options import emit
from reconciler.desired import expand
from reconciler.emulator import EmulatorConfig
from reconciler.errors import JobFailed, SettingsError
from reconciler.spec import validate_paths
from reconciler.spec.model import SOURCE_KINDS, LookupDocument
from tests.planning import KINDS, Project, lookup_doc

pytestmark = pytest.mark.anyio


async def _create_directly(project: Project, name: str, kind_body: str) -> None:
    """Create a lookup through the API (not through apply), as a person would have by hand."""
    import yaml

    document = LookupDocument.model_validate(yaml.safe_load(lookup_doc(name, kind_body)))
    body, _, _ = expand(document.spec)
    body = json.loads(
        json.dumps(body)
        .replace("${env:TEST_S3_ACCESS}", "AKIA1")
        .replace("${env:TEST_S3_SECRET}", "s3cret")
    )
    endpoint = SOURCE_KINDS[document.spec.source_kind or "recipe"]
    async with project.client() as client:
        csv = project.specs / "data" / "geo.csv" if "file:" in kind_body else None
        result = await client.deploy("POST", endpoint, "acme", name, body, csv_file=csv)
        assert result.job_id
        await client.wait_for_job("acme", name, result.job_id)


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_import_round_trip_is_an_empty_plan(tmp_path: Path, kind: str) -> None:
    project = Project(tmp_path)
    await _create_directly(project, "adopted", KINDS[kind])
    out = tmp_path / "imported"
    said = await run_import(project.settings, "acme", out_dir=out, transport=project.transport())
    assert said.code == 0
    spec_file = out / "acme" / "adopted.yaml"
    assert spec_file.exists() and (out / "acme" / "_domain.yaml").exists()
    if kind == "csv_file":  # an uploaded CSV cannot be read back: the user supplies it
        assert "put it at data/adopted.csv" in said.stdout
        (out / "acme" / "data").mkdir()
        (out / "acme" / "data" / "adopted.csv").write_text(
            (project.specs / "data" / "geo.csv").read_text()
        )
    if kind == "csv_s3":
        assert "${env:ACME_ADOPTED_SECRET_KEY}" in spec_file.read_text()
    project.specs = out
    run = await project.plan()
    if kind == "csv_file":
        # The file the user supplied has the live row count, but nothing proves the rows are
        # the same: the first apply sends it, and records what it sent.
        [change] = run.plan.actionable
        assert change.csv is not None and change.csv.source == "unproven", change.reason
        assert await project.apply() == 0
        run = await project.plan()
    assert not run.plan.can_apply(), [(c.address, c.reason) for c in run.plan.changes]
    assert run.plan.changes[0].kind == (
        "csv"
        if kind.startswith("csv")
        else {
            "static": "staticQuery",
            "periodic": "periodicQuery",
            "periodic_dated": "periodicQuery",
            "sliding": "slidingWindowQuery",
            "recipe": "recipe",
        }[kind]
    )


async def test_import_with_null_deploy_config_is_honest(tmp_path: Path) -> None:
    project = Project(
        tmp_path, EmulatorConfig(create_latency=0, deploy_latency=0.01, deploy_config_null=True)
    )
    await _create_directly(project, "opaque", KINDS["csv_s3"])
    out = tmp_path / "imported"
    said = await run_import(project.settings, "acme", out_dir=out, transport=project.transport())
    assert said.code == 0
    assert "imported from metadata only" in said.stderr and "opaque" in said.stderr
    text = (out / "acme" / "opaque.yaml").read_text()
    assert "UNKNOWN" in text and "did not report this lookup's deployConfig" in text
    result = validate_paths([str(out)], csv=False)
    assert not result.errors, [d.render() for d in result.errors]
    [lookup] = result.lookups
    columns = lookup.model.spec.csv.columns  # type: ignore[union-attr]
    assert [(c.name, c.type) for c in columns] == [("ip", "IP4"), ("score", "INT4")]


async def test_import_does_not_overwrite_without_force(tmp_path: Path) -> None:
    project = Project(tmp_path)
    await _create_directly(project, "x", KINDS["static"])
    out = tmp_path / "imported"
    assert (
        emit(await run_import(project.settings, "acme", out_dir=out, transport=project.transport()))
        == 0
    )
    edited = "# my edits\n" + (out / "acme" / "x.yaml").read_text()
    (out / "acme" / "x.yaml").write_text(edited)
    # x is managed now: a plain import leaves it (and the Domain document) alone.
    assert (
        emit(await run_import(project.settings, "acme", out_dir=out, transport=project.transport()))
        == 0
    )
    assert (out / "acme" / "x.yaml").read_text() == edited
    everything = {"everything": True, "transport": project.transport()}
    with pytest.raises(SettingsError, match="would overwrite"):
        await run_import(project.settings, "acme", out_dir=out, **everything)
    assert (out / "acme" / "x.yaml").read_text() == edited
    assert (
        emit(
            await run_import(
                project.settings,
                "acme",
                out_dir=out,
                force=True,
                everything=True,
                transport=project.transport(),
            )
        )
        == 0
    )
    assert "staticQuery" in (out / "acme" / "x.yaml").read_text()


async def test_jobs_show_failure_message_and_running_status(tmp_path: Path) -> None:
    project = Project(
        tmp_path, EmulatorConfig(create_latency=0, deploy_latency=0.01, job_failure_pattern="bad")
    )
    async with project.client() as client:
        bad = await client.deploy(
            "POST", "deploy-static-query", "acme", "bad", {"query": "from a select b"}
        )
        assert bad.job_id
        with pytest.raises(JobFailed):
            await client.wait_for_job("acme", "bad", bad.job_id)
    said = await run_jobs(project.settings, "acme/bad", transport=project.transport())
    assert said.code == 0
    out = said.stdout
    assert f"job {bad.job_id}: FAILED" in out
    assert "deploy.err Lookup deployment failed: injected failure" in " ".join(out.split())
    project.emulator.config.create_latency = 60
    async with project.client() as client:
        slow = await client.deploy(
            "POST", "deploy-static-query", "acme", "slow", {"query": "from a select b"}
        )
    said = await run_jobs(
        project.settings, "acme/slow", output_format="json", transport=project.transport()
    )
    assert said.code == 0
    document = json.loads(said.stdout)
    [job] = document["jobs"]
    assert job["id"] == slow.job_id and job["stage"] == "running" and job["stopped"] is None
    assert job["statuses"][-1]["code"] == "create.start"


async def test_jobs_rejects_a_bad_address(tmp_path: Path) -> None:
    project = Project(tmp_path)
    with pytest.raises(SettingsError, match="is not DOMAIN/NAME"):
        await run_jobs(project.settings, "no-slash", transport=project.transport())


@pytest.mark.waits
async def test_jobs_watch_follows_a_job_to_its_end(tmp_path: Path) -> None:
    project = Project(
        tmp_path, EmulatorConfig(create_latency=0.2, deploy_latency=0.3, job_failure_pattern="bad")
    )
    async with project.client() as client:
        good = await client.deploy(
            "POST", "deploy-static-query", "acme", "good", {"query": "from a select b"}
        )
        await client.deploy(
            "POST", "deploy-static-query", "acme", "bad", {"query": "from a select b"}
        )
    heard: list[str] = []  # what --watch prints as it happens
    said = await run_jobs(
        project.settings,
        "acme/good",
        watch=True,
        transport=project.transport(),
        listener=lambda line: heard.append(line.text),
    )
    assert said.code == 0
    out = "\n".join(heard) + "\n" + said.stdout
    codes = [line.split()[1] for line in out.splitlines() if line.startswith("  ")]
    assert codes == ["create.start", "create.ok", "deploy.start", "deploy.ok"]
    assert f"acme/good: job {good.job_id} done." in out
    said = await run_jobs(project.settings, "acme/bad", watch=True, transport=project.transport())
    assert said.code == 1
    assert "deploy.err: Lookup deployment failed: injected failure" in said.stdout


def test_rich_console_shows_progress_and_outcomes() -> None:
    import io

    from rich.console import Console

    from reconciler.apply.outcome import Outcome
    from reconciler.client import JobStatus
    from reconciler.plan.model import Action, Change
    from reconciler.views.text import RichConsole

    stream = io.StringIO()
    console = RichConsole(2, console=Console(file=stream, force_terminal=True, width=100))
    change = Change(
        address="acme/x", domain="acme", name="x", action=Action.CREATE, endpoint="deploy-csv"
    )
    with console:
        console.change_started(change, "POST")
        console.job_status(change, JobStatus(code="create.start", msg="Lookup [/creation] started"))
        console.change_finished(
            change, Outcome("acme/x", Action.CREATE, "done", "j-1", "Lookup successfully deployed")
        )
    text = stream.getvalue()
    assert "acme/x: done" in text and "(job j-1)" in text and "Lookup successfully deployed" in text


def test_jobs_view_follows_the_apply_rule_for_a_job_ending_at_create_ok() -> None:
    from reconciler.client import JobStatus
    from reconciler.client.job_views import job_view

    ended = [
        JobStatus(code="create.start", eventdata="2026-11-24T15:00:00.000"),
        JobStatus(code="create.ok", eventdata="2026-11-24T15:00:02.500"),
    ]
    later = datetime(2026, 11, 24, 16, 0, 0, tzinfo=UTC)
    view = job_view("j", ended, now=later)
    assert view.stage == "done" and view.seconds == 2.5
    assert view.stopped == "2026-11-24T15:00:02.500+00:00"
    soon = datetime(2026, 11, 24, 15, 0, 5, tzinfo=UTC)  # 2.5 s after create.ok: may go on
    assert job_view("j", ended, now=soon).stage == "running"
    uploaded = [
        JobStatus(code="push.start", eventdata="2026-11-24T15:00:00"),
        JobStatus(code="push.ok", eventdata="2026-11-24T15:00:01"),
    ]
    assert job_view("j", uploaded, now=later).stage == "running"  # push.ok never ends a job


async def test_jobs_watch_of_an_unknown_job_fails_at_once(tmp_path: Path) -> None:
    from reconciler.errors import NotFoundError

    project = Project(tmp_path)
    async with project.client() as client:
        await client.deploy(
            "POST", "deploy-static-query", "acme", "x", {"query": "from a select b"}
        )
    with pytest.raises(NotFoundError) as caught:
        await run_jobs(
            project.settings, "acme/x", job_id="typo", watch=True, transport=project.transport()
        )
    assert caught.value.hint and "reconciler jobs acme/x" in caught.value.hint


async def test_import_writes_only_specs_that_validate(tmp_path: Path) -> None:
    project = Project(tmp_path)
    async with project.client() as client:
        for name, query in [
            ("a b", "from a select b"),  # a live name no spec can carry
            ("grouped", "from a select host, count() as n group by host"),
            ("with-dash", "from a select b"),
        ]:
            await client.deploy("POST", "deploy-static-query", "acme", name, {"query": query})
    out = tmp_path / "imported"
    said = await run_import(project.settings, "acme", out_dir=out, transport=project.transport())
    assert said.code == 0
    assert "acme/a b: skipped, the spec it would need is not valid: metadata.name" in said.stderr
    written = sorted(p.name for p in (out / "acme").glob("*.yaml"))
    assert "a b.yaml" not in written and "with-dash.yaml" in written
    result = validate_paths([str(out)], csv=False)
    assert not result.errors, [d.render() for d in result.errors]
    warnings = [d.message for d in result.diagnostics if d.severity == "warning"]
    assert any("'with-dash' has characters other than" in w for w in warnings)
