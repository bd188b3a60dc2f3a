"""The three-way plan against services with habits: echoes rewritten, nulls spelled otherwise, ...

For every source kind, with and without ``deployConfig`` in the service's answers, and with each
habit of ``reconciler.emulator.habits`` switched on (one at a time, then all together):

* apply then plan is empty, and single-field spec edits plan exactly that field;
* a switch of source kind plans an update through the new endpoint, and applies cleanly;
* a change made in Devo behind the tool's back (data, kind, query, visibility) is drift, exit 2,
  with the state file kept and without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from reconciler.commands import run_drift
from reconciler.desired import resolve_secrets
from reconciler.emulator import EmulatorConfig
from reconciler.engine import load_workspace
from reconciler.plan.model import Action, Change, Plan
from reconciler.plan.render import render_text
from tests.planning import FAST_POLL, GEO, KINDS, SECRETS, Project, lookup_doc

pytestmark = pytest.mark.anyio

HABITS: dict[str, dict[str, bool]] = {
    "tidy": {},
    "rewrite": {"rewrite_queries": True},
    "from": {"columns_with_from": True},
    "empty": {"empty_for_null": True},
    "strings": {"numbers_as_strings": True},
    "vanish": {"jobs_vanish": True},
    "all": {
        "rewrite_queries": True,
        "columns_with_from": True,
        "empty_for_null": True,
        "numbers_as_strings": True,
        "jobs_vanish": True,
    },
}
# One single-field edit per kind: (old text, new text, the path it must plan).
EDITS: dict[str, tuple[str, str, str]] = {
    "csv_file": (
        "{type: column, column: ip}",
        "{type: column, column: country}",
        "recipe.key.column",
    ),
    "csv_s3": ("{name: score, type: INT4}", "{name: score, type: INT8}", "recipe.source.columns"),
    "static": ("from a select user, role", "from b select user, role", "recipe.source.query"),
    "periodic": ("refreshPeriod: 10m", "refreshPeriod: 20m", "recipe.refreshMillis"),
    "periodic_dated": (
        '"2026-01-01T00:00:00Z"',
        '"2026-02-01T00:00:00.001Z"',
        "recipe.startMillis",
    ),
    "sliding": ("windowSize: 1d", "windowSize: 2d", "recipe.windowMillis"),
    "recipe": (
        "secondaryIndexes: {type: all}",
        "secondaryIndexes: {type: none}",
        "recipe.secondaryIndexes.type",
    ),
}
ENDPOINTS = {
    "csv_file": "deploy-csv",
    "csv_s3": "deploy-csv",
    "static": "deploy-static-query",
    "periodic": "deploy-periodic-query",
    "periodic_dated": "deploy-periodic-query",
    "sliding": "deploy-sliding-window-query",
    "recipe": "deploy-config",
}
# A query with one more column than each query kind's, for out-of-band query edits.
WIDER_QUERY = {
    "static": ("from a select user, role", "from a select user, role, dept"),
    "periodic": ("select ip, count() as n", "select ip, count() as n, max(x) as m"),
    "periodic_dated": ("select ip group by ip", "select ip, max(x) as m group by ip"),
    "sliding": ("select domain, count() as hits", "select domain, count() as hits, max(x) as m"),
    "recipe": ("from a select host, owner", "from a select host, owner, site"),
}


def project_for(tmp_path: Path, habit: str, null_config: bool) -> Project:
    config = EmulatorConfig(
        create_latency=0,
        deploy_latency=0.01,
        delete_latency=0.01,
        deploy_config_null=null_config,
        **HABITS[habit],
    )
    return Project(tmp_path, config)


def only_change(plan: Plan) -> Change:
    actionable = plan.actionable
    assert len(actionable) == 1, [(c.address, c.action, c.reason) for c in actionable]
    return actionable[0]


def matrix(*, kinds: list[str] | None = None) -> Any:
    """kind × deployConfig shown or null × habit."""
    return [
        pytest.param(kind, null, habit, id=f"{kind}-{'null' if null else 'config'}-{habit}")
        for kind in kinds or sorted(KINDS)
        for null in (False, True)
        for habit in HABITS
    ]


@pytest.mark.parametrize(("kind", "null_config", "habit"), matrix())
async def test_apply_then_plan_is_empty_and_each_edit_is_exactly_itself(
    tmp_path: Path, kind: str, null_config: bool, habit: str
) -> None:
    project = project_for(tmp_path, habit, null_config)
    project.write(lookup_doc("one", KINDS[kind]))
    assert await project.apply() == 0
    run = await project.plan()
    assert not run.plan.can_apply(), render_text(run.plan)
    assert run.plan.warnings == () and run.plan.unverified == []

    old, new, path = EDITS[kind]
    assert old in KINDS[kind]
    project.write(lookup_doc("one", KINDS[kind].replace(old, new)))
    change = only_change((await project.plan()).plan)
    assert [(d.path, d.source) for d in change.diff] == [(path, "spec")]
    assert change.request and change.endpoint == ENDPOINTS[kind]

    project.write(lookup_doc("one", KINDS[kind], extra="visibility: all-subdomains"))
    change = only_change((await project.plan()).plan)
    assert [(d.path, d.before, d.after) for d in change.diff] == [
        ("visibility", "creator-only", "all-subdomains")
    ]
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()


def _switch_target(kind: str) -> str:
    order = sorted(KINDS)
    return order[(order.index(kind) + 1) % len(order)]


@pytest.mark.parametrize(("kind", "null_config", "habit"), matrix())
async def test_a_kind_switch_is_an_update_through_the_new_endpoint(
    tmp_path: Path, kind: str, null_config: bool, habit: str
) -> None:
    project = project_for(tmp_path, habit, null_config)
    project.write(lookup_doc("one", KINDS[kind]))
    assert await project.apply() == 0
    target = _switch_target(kind)
    project.write(lookup_doc("one", KINDS[target]))
    change = only_change((await project.plan()).plan)
    assert change.action is Action.UPDATE and change.endpoint == ENDPOINTS[target]
    if ENDPOINTS[target] != ENDPOINTS[kind]:
        assert change.diff[0].path == "endpoint"
        assert (change.diff[0].before, change.diff[0].after) == (ENDPOINTS[kind], ENDPOINTS[target])
    assert change.diff and all(d.source == "spec" for d in change.diff)
    project.emulator.stats.routes.clear()
    assert await project.apply() == 0
    assert (
        project.emulator.stats.routes[f"PUT /lookup/{{domain}}/{{name}}/{ENDPOINTS[target]}"] == 1
    )
    assert not (await project.plan()).plan.can_apply()


# --- changes made in Devo behind the tool's back -----------------------------------------------


async def _deploy_out_of_band(project: Project, document: str, csv: str | None = None) -> None:
    """PUT a lookup as someone else would: through the API, from a spec outside the project."""
    other = project.root / "elsewhere"
    shutil.rmtree(other, ignore_errors=True)
    (other / "data").mkdir(parents=True)
    (other / "data" / "geo.csv").write_text(csv or GEO)
    (other / "l.yaml").write_text(document)
    [want] = load_workspace([str(other)]).desired
    assert want.endpoint is not None
    body = resolve_secrets(want.body, SECRETS)
    async with project.client() as client:
        result = await client.deploy(
            "PUT",
            want.endpoint,
            want.domain,
            want.name,
            body,
            csv_file=want.csv.path if want.csv else None,
        )
        assert result.job_id
        await client.wait_for_job(want.domain, want.name, result.job_id, policy=FAST_POLL)


def _out_of_band_cases() -> Any:
    cases = []
    for kind in sorted(KINDS):
        changes = ["visibility", "kind"]
        changes.append("data" if kind == "csv_file" else "query" if kind in WIDER_QUERY else "")
        for change in filter(None, changes):
            for null in (False, True):
                for habit in HABITS:
                    cases.append(
                        pytest.param(
                            kind,
                            change,
                            null,
                            habit,
                            id=f"{kind}-{change}-{'null' if null else 'config'}-{habit}",
                        )
                    )
    return cases


def _expected_paths(change: str, kind: str, null_config: bool, with_state: bool) -> set[str]:
    """Paths of which at least one must be in the drift (what the service lets a plan see)."""
    if change == "visibility":
        return {"visibility"}
    if change == "query":
        return {"fields"} if null_config else {"recipe.source.query"}
    if change == "kind":
        if null_config:
            return {"fields"}
        return {
            "recipe.source.columns",
            "recipe.source.query",
            "recipe.source.fileProvider.bucketName",
        }
    return set()


@pytest.mark.parametrize(("kind", "change", "null_config", "habit"), _out_of_band_cases())
async def test_a_change_made_in_devo_is_drift_with_and_without_state(
    tmp_path: Path, kind: str, change: str, null_config: bool, habit: str
) -> None:
    project = project_for(tmp_path, habit, null_config)
    spec = lookup_doc("one", KINDS[kind])
    project.write(spec)
    assert await project.apply() == 0
    assert (
        await run_drift(project.settings, [str(project.specs)], transport=project.transport()) == 0
    )

    if change == "visibility":
        await _deploy_out_of_band(
            project, lookup_doc("one", KINDS[kind], extra="visibility: all-subdomains")
        )
    elif change == "kind":
        other = "static" if kind.startswith("csv") else "csv_s3"
        await _deploy_out_of_band(project, lookup_doc("one", KINDS[other]))
    elif change == "query":
        old, new = WIDER_QUERY[kind]
        assert old in KINDS[kind]
        await _deploy_out_of_band(project, lookup_doc("one", KINDS[kind].replace(old, new)))
    else:  # data: the same spec, but someone uploaded a one-row file
        await _deploy_out_of_band(project, spec, csv="ip,country\n10.9.9.9,XX\n")

    for with_state in (True, False):
        if not with_state:
            project.settings.state_path.unlink()
        code = await run_drift(
            project.settings, [str(project.specs)], transport=project.transport()
        )
        assert code == 2, f"no drift seen (state kept: {with_state})"
        found = only_change((await project.plan()).plan)
        assert found.action is Action.UPDATE
        if change == "data":
            assert found.csv is not None and found.csv.source == "live"
            assert (found.csv.before_rows, found.csv.after_rows) == (1, 3)
        else:
            paths = {d.path for d in found.diff}
            assert paths & _expected_paths(change, kind, null_config, with_state), found.diff
            if with_state:
                assert "changed in Devo" in found.reason
    assert await project.apply() == 0
    assert (
        await run_drift(project.settings, [str(project.specs)], transport=project.transport()) == 0
    )
