"""Plan and drift: no false changes after an apply, and exactly the right change for each edit."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli_options import emit
from reconciler.emulator import EmulatorConfig
from reconciler.emulator.derive import derive
from reconciler.errors import NotFoundError, PlanError
from reconciler.plan.builder import Selector
from reconciler.plan.guards import Guards
from reconciler.plan.model import Action, Change, Plan
from reconciler.views.json import plan as render_json
from reconciler.views.markdown import plan as render_markdown
from reconciler.views.text import plan as render_text
from tests.planning import KINDS, SECRETS, Project, lookup_doc
from tests.support import git

pytestmark = pytest.mark.anyio


def only_change(plan: Plan) -> Change:
    actionable = plan.actionable
    assert len(actionable) == 1, [(c.address, c.action, c.reason) for c in actionable]
    return actionable[0]


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("null_config", [False, True], ids=["deployConfig", "deployConfig-null"])
async def test_apply_then_plan_is_empty(tmp_path: Path, kind: str, null_config: bool) -> None:
    project = Project(
        tmp_path,
        EmulatorConfig(create_latency=0, deploy_latency=0.02, deploy_config_null=null_config),
    )
    project.write(lookup_doc("one", KINDS[kind]))
    first = (await project.plan()).plan
    assert [c.action for c in first.changes] == [Action.CREATE]
    assert await project.apply() == 0
    run = await project.plan()
    assert not run.plan.can_apply(), render_text(run.plan)
    assert run.plan.changes[0].action is Action.NOOP
    assert run.plan.warnings == ()  # what the service hides, the state file vouches for


async def test_null_config_without_state_says_what_it_cannot_verify(tmp_path: Path) -> None:
    project = Project(
        tmp_path, EmulatorConfig(create_latency=0, deploy_latency=0.02, deploy_config_null=True)
    )
    project.write(lookup_doc("q", KINDS["static"]))
    assert await project.apply() == 0
    project.settings.state_path.unlink()
    plan = (await project.plan()).plan
    [change] = plan.changes
    assert change.action is Action.NOOP
    assert "recipe.source.query" in change.unverified
    assert plan.warnings and "could not verify" in plan.warnings[0]


async def test_secrets_are_not_compared_and_not_shown(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("s3", KINDS["csv_s3"]))
    assert await project.apply() == 0
    run = await project.plan()
    assert not run.plan.can_apply()
    for text in (render_text(run.plan), render_json(run.plan), render_markdown(run.plan)):
        assert all(secret not in text for secret in SECRETS.values())
    assert all(secret not in project.settings.state_path.read_text() for secret in SECRETS.values())


@pytest.mark.parametrize(
    ("kind", "old", "new", "path"),
    [
        ("static", "from a select user, role", "from b select user, role", "recipe.source.query"),
        (
            "static",
            "{type: column, column: user}",
            "{type: column, column: role}",
            "recipe.key.column",
        ),
        (
            "csv_s3",
            "{name: score, type: INT4}",
            "{name: score, type: INT8}",
            "recipe.source.columns",
        ),
        (
            "csv_s3",
            "[{name: ip, type: IP4}, {name: score, type: INT4}]",
            "[{name: score, type: INT4}, {name: ip, type: IP4}]",
            "recipe.source.columns",
        ),
        ("periodic", "refreshPeriod: 10m", "refreshPeriod: 20m", "recipe.refreshMillis"),
        ("sliding", "windowSize: 1d", "windowSize: 2d", "recipe.windowMillis"),
        (
            "recipe",
            "secondaryIndexes: {type: all}",
            "secondaryIndexes: {type: none}",
            "recipe.secondaryIndexes.type",
        ),
    ],
)
async def test_each_edit_yields_exactly_its_change(
    tmp_path: Path, kind: str, old: str, new: str, path: str
) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("edited", KINDS[kind]), lookup_doc("bystander", KINDS["static"]))
    assert await project.apply() == 0
    assert new != old and old in KINDS[kind]
    project.write(
        lookup_doc("edited", KINDS[kind].replace(old, new)),
        lookup_doc("bystander", KINDS["static"]),
    )
    change = only_change((await project.plan()).plan)
    assert change.address == "acme/edited" and change.action is Action.UPDATE
    assert [d.path for d in change.diff] == [path]
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()


async def test_visibility_change(tmp_path: Path) -> None:
    project = Project(
        tmp_path, EmulatorConfig(create_latency=0, deploy_latency=0.02, deploy_config_null=True)
    )
    project.write(lookup_doc("v", KINDS["static"]))
    assert await project.apply() == 0
    project.settings.state_path.unlink()  # only the service's `shared` flag can tell now
    project.write(lookup_doc("v", KINDS["static"], extra="visibility: all-subdomains"))
    change = only_change((await project.plan()).plan)
    assert [(d.path, d.before, d.after) for d in change.diff] == [
        ("visibility", "creator-only", "all-subdomains")
    ]


async def test_csv_content_change_of_one_cell(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("geo", KINDS["csv_file"]))
    assert await project.apply() == 0
    csv = project.specs / "data" / "geo.csv"
    csv.write_text(csv.read_text().replace("10.0.0.2,US", "10.0.0.2,CA"))
    change = only_change((await project.plan()).plan)
    assert change.action is Action.UPDATE and change.diff == [] and change.csv is not None
    assert change.csv.before_rows == change.csv.after_rows == 3
    assert change.csv.before_sha256 != change.csv.after_sha256
    assert change.reason == "CSV content changed"
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()


async def test_csv_row_count_is_a_stateless_signal(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("geo", KINDS["csv_file"]))
    assert await project.apply() == 0
    project.settings.state_path.unlink()
    unproven = only_change((await project.plan()).plan)  # same count: proves nothing
    assert unproven.csv is not None and unproven.csv.source == "unproven"
    csv = project.specs / "data" / "geo.csv"
    csv.write_text(csv.read_text() + "10.0.0.4,DE\n")
    change = only_change((await project.plan()).plan)
    assert change.csv is not None and (change.csv.before_rows, change.csv.after_rows) == (3, 4)
    assert change.csv.source == "live"


async def test_state_absent_deletes(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("gone", KINDS["static"]))
    assert await project.apply() == 0
    project.write(lookup_doc("gone", "", extra="state: absent"))
    change = only_change((await project.plan()).plan)
    assert change.action is Action.DELETE and change.reason == "state: absent"
    assert await project.apply() == 0
    plan = (await project.plan()).plan
    assert not plan.can_apply() and plan.changes[0].reason == "absent, as wanted"


DOMAIN = "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {{name: acme}}\nspec: {{prune: {prune}, keep: ['manual_*']}}\n"


async def test_prune_with_keep_globs_and_unmanaged(tmp_path: Path) -> None:
    project = Project(tmp_path)
    async with project.client() as client:
        for name in ("manual_one", "stray"):
            await client.deploy(
                "POST", "deploy-static-query", "acme", name, {"query": "from x select y"}
            )
    project.write(lookup_doc("kept", KINDS["static"]), DOMAIN.format(prune="false"))
    assert await project.apply() == 0
    plan = (await project.plan()).plan
    assert plan.unmanaged == ("acme/manual_one", "acme/stray") and not plan.can_apply()
    project.write(lookup_doc("kept", KINDS["static"]), DOMAIN.format(prune="true"))
    plan = (await project.plan()).plan
    change = only_change(plan)
    assert change.address == "acme/stray" and change.action is Action.DELETE
    assert plan.unmanaged == ("acme/manual_one",)


async def test_protect_turns_a_delete_into_an_error(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(
        lookup_doc("vault", KINDS["static"], extra="protect: true"), DOMAIN.format(prune="true")
    )
    assert await project.apply() == 0
    project.write(DOMAIN.format(prune="true"))  # the spec is gone; the state remembers protect
    with pytest.raises(PlanError, match="protected lookup.*acme/vault"):
        await project.plan()
    from reconciler.commands import run_drift

    code = emit(
        await run_drift(project.settings, [str(project.specs)], transport=project.transport())
    )
    assert code == 2  # drift reports it instead of failing


async def test_target_and_exclude(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(*(lookup_doc(n, KINDS["static"]) for n in ("a1", "a2", "b1")))
    plan = (await project.plan(Selector(targets=("acme/a*",), excludes=("*2",)))).plan
    assert [c.address for c in plan.changes] == ["acme/a1"]


async def test_views_agree(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("x", KINDS["static"]))
    plan = (await project.plan()).plan
    assert render_text(plan).endswith("Plan: 1 to add, 0 to change, 0 to destroy.")
    document = json.loads(render_json(plan))
    assert document["format_version"] == "1.0"
    assert document["summary"] == {"add": 1, "change": 0, "destroy": 0, "unchanged": 0}
    [change] = document["changes"]
    assert {"address", "action", "kind", "endpoint", "before", "after", "diff", "reason"} <= set(
        change
    )
    assert (change["action"], change["endpoint"], change["reason"]) == (
        "create",
        "deploy-static-query",
        "not found",
    )
    assert "**Plan: 1 to add, 0 to change, 0 to destroy.**" in render_markdown(plan)
    assert "\x1b[" not in render_text(plan) and "\x1b[32m" in render_text(plan, color=True)


def _static_lookups(project: Project, domains: int, per_domain: int) -> None:
    """``per_domain`` static-query lookups in each of ``domains`` domains, live and as specs."""
    schedule = [(0.0, "create.start", "s"), (0.0, "deploy.ok", "ok")]
    documents = []
    for d in range(domains):
        for i in range(per_domain):
            name = f"l{i:04d}"
            config = derive("deploy-static-query", f"d{d}", name, {"query": f"from t{i} select x"})
            project.emulator.store.create(f"d{d}", name, config, {}, schedule, "o")
            documents.append(
                lookup_doc(name, f"staticQuery: {{query: from t{i} select x}}", domain=f"d{d}")
            )
    project.write(*documents)


async def test_plan_of_2000_lookups_in_10_domains_lists_only(tmp_path: Path) -> None:
    """One list request per domain, however many lookups (the bench measures it at 10,000)."""
    project = Project(tmp_path)
    _static_lookups(project, 10, 200)
    project.emulator.stats.routes.clear()
    plan = (await project.plan()).plan
    assert plan.summary["unchanged"] == 2000 and not plan.can_apply()
    assert dict(project.emulator.stats.routes) == {"GET /lookup/{domain}": 10}


async def test_the_list_calls_are_answered_while_the_desired_lookups_are_worked_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The specs are all checked before anything is sent; then the list calls go out first and
    the desired lookups are worked out while their answers come (a plan waits on them less)."""
    import reconciler.engine as engine

    project = Project(tmp_path)
    _static_lookups(project, 2, 600)
    project.emulator.stats.routes.clear()
    lists_seen: list[int] = []
    real = engine.desired_lookup

    def counting(*args: Any, **kwargs: Any) -> Any:
        lists_seen.append(project.emulator.stats.routes["GET /lookup/{domain}"])
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "desired_lookup", counting)
    plan = (await project.plan()).plan
    assert plan.summary["unchanged"] == 1200 and not plan.can_apply()
    assert lists_seen[0] == 0  # nothing had been sent before the first was worked out
    assert lists_seen[-1] == 2  # both domains' lists had been asked by the last


async def test_a_failure_while_the_lists_are_read_leaves_nothing_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Local work that fails mid-way raises its own error; the list calls it overlapped are
    cancelled, and a list call that failed meanwhile is not reported again as unretrieved."""
    import reconciler.engine as engine

    project = Project(tmp_path)
    _static_lookups(project, 2, 300)
    real = engine.desired_lookup
    count = 0

    def failing(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count == 500:
            raise RuntimeError("invariant broken: planted")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "desired_lookup", failing)
    before = set(asyncio.all_tasks())
    with pytest.raises(RuntimeError, match="planted"):
        await project.plan()
    assert {t for t in asyncio.all_tasks() if not t.done()} - before == set()

    # The list call of a domain the service does not know fails while the work goes on: its
    # error is the plan's once the work is done, and it is not logged again as unretrieved.
    monkeypatch.setattr(engine, "desired_lookup", real)
    known = Project(tmp_path / "known", EmulatorConfig(known_domains=["d0", "d1"]))
    _static_lookups(known, 2, 300)
    (known.specs / "more.yaml").write_text(
        lookup_doc("x", "staticQuery: {query: from t select x}", domain="nowhere")
    )
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with pytest.raises(NotFoundError, match="nowhere: 404") as caught:
            await known.plan()
        gc.collect()
    assert "'nowhere' is named by the specs" in (caught.value.hint or "")
    assert "never retrieved" not in caplog.text


async def test_csv_rows_diffed_by_key_against_the_applied_commit(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(lookup_doc("geo", KINDS["csv_file"]))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "specs")
    git(tmp_path, "commit", "-q", "-m", "geo")
    assert await project.apply() == 0
    csv = project.specs / "data" / "geo.csv"
    csv.write_text("ip,country\n10.0.0.1,ES\n10.0.0.2,CA\n10.0.0.4,DE\n")  # ~ .2, - .3, + .4
    change = only_change((await project.plan()).plan)
    assert change.csv is not None
    assert (change.csv.added, change.csv.removed, change.csv.changed) == (1, 1, 1)
    assert change.csv.samples == ["+ 10.0.0.4,DE", "- 10.0.0.3,FR", "~ 10.0.0.2,US → 10.0.0.2,CA"]
    assert "~ csv content: 3 → 3 rows (+1 -1 ~1 by key)" in render_text((await project.plan()).plan)


async def test_csv_records_ask_git_once_per_folder_per_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every CSV record holds the commit checked out; git is asked once per folder per run."""
    from reconciler import gitrepo
    from reconciler.state import State

    asked: list[Path] = []
    head_commit = gitrepo.head_commit

    def counted(folder: Path) -> str | None:
        asked.append(folder)
        return head_commit(folder)

    monkeypatch.setattr(gitrepo, "head_commit", counted)
    project = Project(tmp_path)
    project.write(*(lookup_doc(f"geo{i}", KINDS["csv_file"]) for i in range(4)))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "specs")
    git(tmp_path, "commit", "-q", "-m", "geo")
    head = head_commit(tmp_path)  # the real one, uncounted
    assert head and await project.apply() == 0
    records = State.load(str(project.settings.state_path)).lookups
    assert {a: r.csv.commit for a, r in records.items() if r.csv} == {
        f"acme/geo{i}": head for i in range(4)
    }
    data = project.specs / "data"
    assert [f for f in asked if f == data] == [data]  # (the journal's question is of specs/)


async def test_csv_rows_diffed_when_the_applied_file_was_never_committed(tmp_path: Path) -> None:
    import shutil

    project = Project(tmp_path)
    project.write(lookup_doc("geo", KINDS["csv_file"]))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "specs")
    git(tmp_path, "commit", "-q", "-m", "geo")
    csv = project.specs / "data" / "geo.csv"
    csv.write_text(csv.read_text() + "10.0.0.9,PT\n")  # applied, but never committed
    assert await project.apply() == 0
    csv.write_text(csv.read_text().replace("PT", "BR"))
    # The state's snapshot of what was sent says which rows changed, git or not.
    change = only_change((await project.plan()).plan)
    assert change.csv is not None and (change.csv.added, change.csv.changed) == (0, 1)
    assert change.csv.samples == ["~ 10.0.0.9,PT → 10.0.0.9,BR"]
    # Without the snapshot (a state from before them), git is asked, and cannot tell.
    shutil.rmtree(project.settings.state_path.parent / "snapshots")
    change = only_change((await project.plan()).plan)
    assert change.csv is not None and change.csv.added is None and change.csv.samples == []
    assert change.csv.note and "was not the one committed" in change.csv.note


async def test_target_and_exclude_that_match_nothing_are_named(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(*(lookup_doc(n, KINDS["static"]) for n in ("a1", "b1")))
    plan = (await project.plan(Selector(targets=("acme/a*", "geo_*"), excludes=("zz*",)))).plan
    assert [c.address for c in plan.changes] == ["acme/a1"]
    assert [w for w in plan.warnings if "matches no lookup" in w] == [
        "--target 'geo_*' matches no lookup (addresses are DOMAIN/NAME, e.g. acme/geo_*)",
        "--exclude 'zz*' matches no lookup (addresses are DOMAIN/NAME, e.g. acme/geo_*)",
    ]


async def test_row_diffs_on_a_shallow_clone_come_from_the_snapshot_or_are_explained(
    tmp_path: Path,
) -> None:
    import subprocess

    from reconciler.client import LookupReader
    from reconciler.engine import make_plan

    origin = tmp_path / "origin"
    project = Project(origin)
    project.write(lookup_doc("geo", KINDS["csv_file"]))
    git(origin, "init", "-q")
    git(origin, "add", "specs")
    git(origin, "commit", "-q", "-m", "one")
    assert await project.apply() == 0  # records the commit "one"
    csv = project.specs / "data" / "geo.csv"
    csv.write_text(csv.read_text() + "10.0.0.9,PT\n")
    git(origin, "commit", "-q", "-am", "two")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{origin}", str(clone)],
        check=True,
        capture_output=True,
    )
    async with LookupReader(project.settings, transport=project.transport()) as reader:
        run = await make_plan(reader, [str(clone / "specs")], project.settings.state_path)
    [change] = run.plan.actionable  # the snapshot knows the rows: the shallow clone does not matter
    assert change.csv is not None and (change.csv.added, change.csv.removed) == (1, 0)
    import shutil

    shutil.rmtree(project.settings.state_path.parent / "snapshots")  # a state from before them
    async with LookupReader(project.settings, transport=project.transport()) as reader:
        run = await make_plan(reader, [str(clone / "specs")], project.settings.state_path)
    [change] = run.plan.actionable
    assert change.csv is not None and change.csv.added is None
    assert change.csv.note and "is not in this shallow clone" in change.csv.note
    assert "fetch-depth: 0" in render_text(run.plan)


async def test_max_destroy_refuses_a_plan_that_deletes_too_much_and_sends_nothing(
    tmp_path: Path,
) -> None:
    from reconciler.commands import ApplyRequest, run_apply

    project = Project(tmp_path)
    names = [f"l{i}" for i in range(4)]
    domain = "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {{name: acme}}\nspec: {{prune: true{extra}}}\n"
    project.write(*(lookup_doc(n, KINDS["static"]) for n in names), domain.format(extra=""))
    assert await project.apply() == 0
    project.write(domain.format(extra=""))  # every spec gone: prune would delete all four
    with pytest.raises(PlanError, match=r"delete 4 lookup\(s\), more than --max-destroy 3"):
        await project.plan(guards=Guards(max_destroy=3))
    project.emulator.stats.routes.clear()
    with pytest.raises(PlanError, match="nothing was sent"):
        await run_apply(
            project.settings,
            [str(project.specs)],
            ApplyRequest(
                auto_approve=True, guards=Guards(max_destroy=3), transport=project.transport()
            ),
        )
    assert not [r for r in project.emulator.stats.routes if r.startswith("DELETE")]
    project.write(domain.format(extra=", maxDestroy: 2"))
    with pytest.raises(
        PlanError,
        match=r"4 lookup\(s\) of acme, more than its maxDestroy 2: acme/l0, acme/l1, acme/l2, acme/l3",
    ):
        await project.plan()
    project.write(domain.format(extra=", maxDestroy: 4"))
    assert len((await project.plan(guards=Guards(max_destroy=4))).plan.actionable) == 4
