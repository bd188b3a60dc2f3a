"""The three-way plan against services with habits: echoes rewritten, nulls spelled otherwise, ...

With and without ``deployConfig`` in the service's answers, and with each habit of
``reconciler.emulator.habits`` switched on (one at a time, then all together), for every source
kind (one lookup of each kind in the same project, so one apply serves them all):

* apply then plan is empty, and single-field spec edits plan exactly that field;
* a switch of source kind plans an update through the new endpoint, and applies cleanly;
* a change made in Devo behind the tool's back (data, kind, query, visibility) is drift, exit 2,
  with the state file kept and without it.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from reconciler.cli_options import emit
from reconciler.commands import run_drift
from reconciler.desired import resolve_secrets
from reconciler.emulator import EmulatorConfig
from reconciler.engine import load_workspace
from reconciler.plan.model import Action, Change, Plan
from reconciler.views.text import plan as render_text
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


def changes_of(plan: Plan, kinds: Iterable[str]) -> dict[str, Change]:
    """The plan's changes by kind: exactly one for each of ``kinds`` (lookup ``acme/<kind>``)."""
    found = {c.address.removeprefix("acme/"): c for c in plan.actionable}
    assert sorted(found) == sorted(kinds), [
        (c.address, c.action, c.reason) for c in plan.actionable
    ]
    return found


def every_kind(source: Callable[[str], str], kinds: Iterable[str] = KINDS, extra: str = "") -> str:
    """One lookup per kind, named after it, its spec block ``source(kind)``: one project holds
    every kind, so one apply (one spec load, one state lock, one listing) serves them all."""
    return "---\n".join(lookup_doc(kind, source(kind), extra=extra) for kind in kinds)


def matrix() -> Any:
    """deployConfig shown or null × habit; every kind inside each case."""
    return [
        pytest.param(null, habit, id=f"{'null' if null else 'config'}-{habit}")
        for null in (False, True)
        for habit in HABITS
    ]


@pytest.mark.parametrize(("null_config", "habit"), matrix())
async def test_apply_then_plan_is_empty_and_each_edit_is_exactly_itself(
    tmp_path: Path, null_config: bool, habit: str
) -> None:
    project = project_for(tmp_path, habit, null_config)
    project.write(every_kind(KINDS.__getitem__))
    assert await project.apply() == 0
    run = await project.plan()
    assert not run.plan.can_apply(), render_text(run.plan)
    assert run.plan.warnings == () and run.plan.unverified == []

    for kind, (old, _, _) in EDITS.items():
        assert old in KINDS[kind], kind
    project.write(every_kind(lambda k: KINDS[k].replace(EDITS[k][0], EDITS[k][1])))
    for kind, change in changes_of((await project.plan()).plan, KINDS).items():
        assert [(d.path, d.source) for d in change.diff] == [(EDITS[kind][2], "spec")], kind
        assert change.request and change.endpoint == ENDPOINTS[kind], kind

    project.write(every_kind(KINDS.__getitem__, extra="visibility: all-subdomains"))
    for kind, change in changes_of((await project.plan()).plan, KINDS).items():
        assert [(d.path, d.before, d.after) for d in change.diff] == [
            ("visibility", "creator-only", "all-subdomains")
        ], kind
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()


def _switch_target(kind: str) -> str:
    order = sorted(KINDS)
    return order[(order.index(kind) + 1) % len(order)]


@pytest.mark.parametrize(("null_config", "habit"), matrix())
async def test_a_kind_switch_is_an_update_through_the_new_endpoint(
    tmp_path: Path, null_config: bool, habit: str
) -> None:
    project = project_for(tmp_path, habit, null_config)
    project.write(every_kind(KINDS.__getitem__))
    assert await project.apply() == 0
    project.write(every_kind(lambda k: KINDS[_switch_target(k)]))
    for kind, change in changes_of((await project.plan()).plan, KINDS).items():
        target = _switch_target(kind)
        assert change.action is Action.UPDATE and change.endpoint == ENDPOINTS[target], kind
        if ENDPOINTS[target] != ENDPOINTS[kind]:
            assert change.diff[0].path == "endpoint", kind
            assert (change.diff[0].before, change.diff[0].after) == (
                ENDPOINTS[kind],
                ENDPOINTS[target],
            )
        assert change.diff and all(d.source == "spec" for d in change.diff), kind
    project.emulator.stats.routes.clear()
    assert await project.apply() == 0
    sent = Counter(ENDPOINTS[_switch_target(kind)] for kind in KINDS)
    puts = {
        route.rsplit("/", 1)[1]: n
        for route, n in project.emulator.stats.routes.items()
        if route.startswith("PUT ")
    }
    assert puts == dict(sent)  # each lookup once, through its new endpoint
    assert not [route for route in project.emulator.stats.routes if route.startswith("POST ")]
    assert not (await project.plan()).plan.can_apply()


# --- changes made in Devo behind the tool's back -----------------------------------------------


async def _deploy_out_of_band(project: Project, documents: str, csv: str | None = None) -> None:
    """PUT lookups as someone else would: through the API, from specs outside the project."""
    other = project.root / "elsewhere"
    shutil.rmtree(other, ignore_errors=True)
    (other / "data").mkdir(parents=True)
    (other / "data" / "geo.csv").write_text(csv or GEO)
    (other / "l.yaml").write_text(documents)
    async with project.client() as client:
        for want in load_workspace([str(other)]).desired:
            assert want.endpoint is not None
            result = await client.deploy(
                "PUT",
                want.endpoint,
                want.domain,
                want.name,
                resolve_secrets(want.body, SECRETS),
                csv_file=want.csv.path if want.csv else None,
            )
            assert result.job_id
            await client.wait_for_job(want.domain, want.name, result.job_id, policy=FAST_POLL)


# The kinds each out-of-band change applies to.
CHANGED_KINDS = {
    "visibility": sorted(KINDS),
    "kind": sorted(KINDS),
    "data": ["csv_file"],
    "query": sorted(WIDER_QUERY),
}


def _out_of_band_cases() -> Any:
    return [
        pytest.param(change, null, habit, id=f"{change}-{'null' if null else 'config'}-{habit}")
        for change in CHANGED_KINDS
        for null in (False, True)
        for habit in HABITS
    ]


def _expected_paths(change: str, null_config: bool) -> set[str]:
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


def _out_of_band(kind: str, change: str) -> str:
    """The spec block someone deploys over ``kind``'s lookup behind the tool's back."""
    if change == "kind":
        return KINDS["static" if kind.startswith("csv") else "csv_s3"]
    if change == "query":
        old, new = WIDER_QUERY[kind]
        assert old in KINDS[kind]
        return KINDS[kind].replace(old, new)
    return KINDS[kind]


@pytest.mark.parametrize(("change", "null_config", "habit"), _out_of_band_cases())
async def test_a_change_made_in_devo_is_drift_with_and_without_state(
    tmp_path: Path, change: str, null_config: bool, habit: str
) -> None:
    kinds = CHANGED_KINDS[change]
    project = project_for(tmp_path, habit, null_config)
    project.write(every_kind(KINDS.__getitem__, kinds))
    assert await project.apply() == 0
    assert (
        emit(await run_drift(project.settings, [str(project.specs)], transport=project.transport()))
        == 0
    )

    extra = "visibility: all-subdomains" if change == "visibility" else ""
    documents = every_kind(lambda k: _out_of_band(k, change), kinds, extra=extra)
    # data: the same spec, but someone uploaded a one-row file
    await _deploy_out_of_band(
        project, documents, csv="ip,country\n10.9.9.9,XX\n" if change == "data" else None
    )

    for with_state in (True, False):
        if not with_state:
            project.settings.state_path.unlink()
        paths = [str(project.specs)]
        said = await run_drift(
            project.settings, paths, output_format="json", transport=project.transport()
        )
        assert said.code == 2, f"no drift seen (state kept: {with_state})"
        # What drift itself reports (its plan JSON, read back into the plan's model).
        report = json.loads(said.stdout)
        assert report["in_sync"] is False
        drift = Plan(changes=tuple(Change.model_validate(c) for c in report["changes"]))
        for kind, found in changes_of(drift, kinds).items():
            assert found.action is Action.UPDATE, kind
            if change == "data":
                assert found.csv is not None and found.csv.source == "live"
                assert (found.csv.before_rows, found.csv.after_rows) == (1, 3)
            else:
                paths = {d.path for d in found.diff}
                assert paths & _expected_paths(change, null_config), (kind, found.diff)
                if with_state:
                    assert "changed in Devo" in found.reason, kind
    assert await project.apply() == 0
    assert (
        emit(await run_drift(project.settings, [str(project.specs)], transport=project.transport()))
        == 0
    )


# --- nothing silently unverifiable -----------------------------------------------------------


async def test_strict_plan_without_config_or_state_exits_1_naming_what(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.commands import run_plan

    project = project_for(tmp_path, "tidy", True)
    project.write(lookup_doc("q", KINDS["static"]))
    assert await project.apply() == 0
    project.settings.state_path.unlink()
    capsys.readouterr()
    specs = [str(project.specs)]
    assert emit(await run_plan(project.settings, specs, transport=project.transport())) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith(
        "1 lookup(s) could not be verified (no deployConfig from the service, no state)."
    )
    assert out.rstrip().splitlines()[-1].startswith("No changes.")
    code = emit(await run_plan(project.settings, specs, strict=True, transport=project.transport()))
    assert code == 1
    err = capsys.readouterr().err
    assert "--strict: 1 lookup(s) could not be verified: acme/q (" in err
    assert "recipe.source.query" in err
    # A plain apply has nothing to do and must not vouch for what it could not verify ...
    assert await project.apply() == 0
    assert (
        emit(await run_plan(project.settings, specs, strict=True, transport=project.transport()))
        == 1
    )
    # ... re-sending it records it, and the same strict plan passes.
    assert await project.apply(replace=["acme/q"]) == 0
    assert (
        emit(await run_plan(project.settings, specs, strict=True, transport=project.transport()))
        == 0
    )


def test_strict_comes_from_the_environment_too(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reconciler.cli import app

    project = project_for(tmp_path, "tidy", True)
    project.write(lookup_doc("q", KINDS["static"]))
    # The embedded emulator under the project's state dir, configured to hide deployConfig.
    env = {
        "RECONCILER_STATE": str(project.settings.state_path),
        "RECONCILER_EMULATOR_DB": str(tmp_path / "emulator.db"),
        "RECONCILER_EMULATOR_CONFIG": '{"deploy_config_null": true, "create_latency": 0, "deploy_latency": 0}',
    }
    runner = CliRunner()
    applied = runner.invoke(
        app, ["apply", "--emulator", "--auto-approve", str(project.specs)], env=env
    )
    assert applied.exit_code == 0, applied.output
    project.settings.state_path.unlink()
    plain = runner.invoke(app, ["plan", "--emulator", str(project.specs)], env=env)
    assert plain.exit_code == 0, plain.output
    strict = runner.invoke(
        app, ["plan", "--emulator", str(project.specs)], env={**env, "RECONCILER_STRICT": "1"}
    )
    assert strict.exit_code == 1 and "could not be verified" in strict.output


# --- protect, --replace and rotated secrets ---------------------------------------------------

DOMAIN_PRUNE = (
    "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: acme}\nspec: {prune: true}\n"
)


async def test_protect_false_is_applied_without_a_request_then_prune_deletes(
    tmp_path: Path,
) -> None:
    project = project_for(tmp_path, "tidy", False)
    project.write(lookup_doc("vault", KINDS["static"], extra="protect: true"), DOMAIN_PRUNE)
    assert await project.apply() == 0
    project.write(lookup_doc("vault", KINDS["static"], extra="protect: false"), DOMAIN_PRUNE)
    change = only_change((await project.plan()).plan)
    assert change.action is Action.UPDATE and not change.request
    assert [(d.path, d.before, d.after, d.source) for d in change.diff] == [
        ("protect", True, False, "state")
    ]
    project.emulator.stats.routes.clear()
    assert await project.apply() == 0
    assert (
        sum(n for route, n in project.emulator.stats.routes.items() if not route.startswith("GET"))
        == 0
    )  # recorded only: nothing was sent
    assert not (await project.plan()).plan.can_apply()
    project.write(DOMAIN_PRUNE)  # the spec is gone; the state no longer says protect
    change = only_change((await project.plan()).plan)
    assert change.action is Action.DELETE and change.address == "acme/vault"


async def test_protect_true_is_recorded_for_a_lookup_that_is_otherwise_up_to_date(
    tmp_path: Path,
) -> None:
    project = project_for(tmp_path, "tidy", False)
    project.write(lookup_doc("vault", KINDS["static"]), DOMAIN_PRUNE)
    assert await project.apply() == 0
    project.write(lookup_doc("vault", KINDS["static"], extra="protect: true"), DOMAIN_PRUNE)
    assert await project.apply() == 0
    project.write(DOMAIN_PRUNE)
    from reconciler.errors import PlanError

    with pytest.raises(PlanError, match="protected lookup"):
        await project.plan()


async def test_replace_resends_an_up_to_date_lookup(tmp_path: Path) -> None:
    from reconciler.errors import SettingsError

    project = project_for(tmp_path, "tidy", False)
    project.write(lookup_doc("s3", KINDS["csv_s3"]), lookup_doc("other", KINDS["static"]))
    assert await project.apply() == 0
    plan = (await project.plan(replace=["acme/s3"])).plan
    change = only_change(plan)
    assert change.address == "acme/s3" and change.reason == "replace requested (--replace)"
    project.emulator.stats.routes.clear()
    assert await project.apply(replace=["acme/s3"]) == 0
    assert project.emulator.stats.routes["PUT /lookup/{domain}/{name}/deploy-csv"] == 1
    assert "PUT /lookup/{domain}/{name}/deploy-static-query" not in project.emulator.stats.routes
    with pytest.raises(SettingsError, match="--replace names no lookup.*acme/typo"):
        await project.apply(replace=["acme/typo"])


async def test_a_rotated_s3_secret_is_seen_and_pushed_without_being_stored(
    tmp_path: Path,
) -> None:
    project = project_for(tmp_path, "tidy", False)
    project.write(lookup_doc("s3", KINDS["csv_s3"]))
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()
    rotated = {**SECRETS, "TEST_S3_SECRET": "rotated-canary-secret-43"}
    change = only_change((await project.plan(env=rotated)).plan)
    assert [d.path for d in change.diff] == ["recipe.source.fileProvider.secrets"]
    assert await project.apply(env=rotated) == 0
    assert not (await project.plan(env=rotated)).plan.can_apply()
    # Without the variables at plan time nothing can be said, and nothing is claimed.
    assert not (await project.plan(env={})).plan.can_apply()
    state = project.settings.state_path.read_text()
    for value in (*SECRETS.values(), rotated["TEST_S3_SECRET"]):
        assert value not in state


async def test_no_wait_records_submitted_and_a_failed_job_is_planned_again(
    tmp_path: Path,
) -> None:
    import json

    project = project_for(tmp_path, "tidy", False)
    project.emulator.config.job_failure_pattern = "doomed"
    project.write(lookup_doc("doomed", KINDS["static"]))
    assert await project.apply(wait=False) == 0
    record = json.loads(project.settings.state_path.read_text())["lookups"]["acme/doomed"]
    assert record["status"] == "submitted"
    await __import__("asyncio").sleep(0.1)  # the job ends (in deploy.err) meanwhile
    project.emulator.config.job_failure_pattern = None
    # A failed update leaves the lookup in place (the emulator restores it): the plan must not
    # trust the record and plans the lookup again, naming the failed job.
    plan = (await project.plan()).plan
    [change] = plan.changes
    if change.action is Action.UPDATE:
        assert "the last apply's job failed" in change.reason and "deploy.err" in change.reason
    else:  # a failed create removed the lookup: it is simply created again
        assert change.action is Action.CREATE
    assert await project.apply() == 0
    assert not (await project.plan()).plan.can_apply()


async def test_no_wait_update_whose_job_fails_is_not_up_to_date(tmp_path: Path) -> None:
    project = project_for(tmp_path, "tidy", False)
    project.write(lookup_doc("x", KINDS["static"]))
    assert await project.apply() == 0
    project.emulator.config.job_failure_pattern = "x"
    project.write(lookup_doc("x", KINDS["static"].replace("from a", "from b")))
    assert await project.apply(wait=False) == 0
    await __import__("asyncio").sleep(0.1)
    project.emulator.config.job_failure_pattern = None
    change = only_change((await project.plan()).plan)
    assert "the last apply's job failed" in change.reason, change.reason


# --- drift and keep globs ---------------------------------------------------------------------


async def test_unmanaged_lookups_covered_by_keep_are_reported_but_not_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = project_for(tmp_path, "tidy", False)
    async with project.client() as client:
        await client.deploy(
            "POST", "deploy-static-query", "acme", "manual_x", {"query": "from x select y"}
        )
    domain = "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {{name: acme}}\nspec: {{prune: {p}, keep: ['manual_*']}}\n"
    for prune in ("true", "false"):
        project.write(lookup_doc("kept", KINDS["static"]), domain.format(p=prune))
        assert await project.apply() == 0
        capsys.readouterr()
        code = emit(
            await run_drift(project.settings, [str(project.specs)], transport=project.transport())
        )
        out = capsys.readouterr().out
        assert code == 0, out
        assert (
            "acme/manual_x (kept)" in out
            and "In sync. 1 unmanaged lookup(s) kept by keep globs (not drift)." in out
        )
        assert "set prune: true" not in out  # the hint matches the Domain's real settings
    project.write(lookup_doc("kept", KINDS["static"]))  # no Domain document: manual_x is drift
    capsys.readouterr()
    assert (
        emit(await run_drift(project.settings, [str(project.specs)], transport=project.transport()))
        == 2
    )
    assert "no Domain document" in capsys.readouterr().out


# --- the service's spellings -----------------------------------------------------------------


def test_canonical_form_reads_the_services_spellings() -> None:
    from reconciler.canonical import flatten

    tidy = {
        "visibility": {"type": "creator-only"},
        "recipe": {
            "recipeType": "periodic",
            "source": {
                "columns": [
                    {"name": "ip", "type": "IP4"},
                    {"name": "n", "type": "int4", "from": 3},
                ],
                "skipPreface": None,
                "hasHeader": True,
            },
            "columnFilter": None,
            "refreshMillis": 300000,
            "append": False,
        },
    }
    spelled = {
        "visibility": "creator-only",
        "recipe": {
            "recipeType": "periodic",
            "source": {
                "columns": [
                    {"name": "ip", "type": "ip4", "from": "0"},
                    {"name": "n", "type": "INT4", "from": 3},
                ],
                "skipPreface": "",
                "hasHeader": "true",
            },
            "columnFilter": [],
            "refreshMillis": "300000",
            "append": "false",
        },
    }
    assert flatten(spelled) == flatten(tidy)
    assert flatten(tidy)["recipe.source.columns"][1] == {"name": "n", "type": "INT4", "from": 3}


def test_the_emulator_rewrites_queries_like_the_captured_echo() -> None:
    from reconciler.emulator.habits import rewrite_query

    sent = (
        "from siem.logintrace where now()-1d < eventdate < now() group by username "
        "select username, count() as event_count"
    )
    echoed = rewrite_query(sent, "devo_services")
    assert echoed.startswith('from siem.logintrace where eq(client, "devo_services") where (')
    assert echoed.endswith("select username select (count() as event_count)")
    assert rewrite_query(sent, "devo_services") == echoed  # deterministic


async def test_element_level_details_of_column_changes(tmp_path: Path) -> None:
    project = project_for(tmp_path, "all", False)
    project.write(lookup_doc("s3", KINDS["csv_s3"]))
    assert await project.apply() == 0
    project.write(
        lookup_doc(
            "s3",
            KINDS["csv_s3"].replace(
                "{name: score, type: INT4}]",
                "{name: score, type: INT8}, {name: city, type: STRING}]",
            ),
        )
    )
    change = only_change((await project.plan()).plan)
    [item] = change.diff
    assert item.details == ["column city added at 2", "column score: type INT4 → INT8"]
    assert "          column city added at 2" in render_text((await project.plan()).plan)


async def test_apply_records_what_the_listing_shows_with_one_list_per_domain(
    tmp_path: Path,
) -> None:
    import json

    project = project_for(tmp_path, "rewrite", False)
    project.write(*(lookup_doc(f"q{i}", KINDS["static"]) for i in range(5)))
    project.emulator.stats.routes.clear()
    assert await project.apply() == 0
    routes = project.emulator.stats.routes
    assert "GET /lookup/{domain}/{name}" not in routes  # no read per lookup
    # The plan's listing, the preflight's one-page read before the first write, and the listing
    # after the jobs: a constant per domain, whatever the number of lookups.
    assert routes["GET /lookup/{domain}"] == 3
    record = json.loads(project.settings.state_path.read_text())["lookups"]["acme/q0"]
    assert record["canonical"]["recipe.source.query"] == "from a select user, role"
    assert record["echoed"]["recipe.source.query"].startswith('from a where eq(client, "acme")')
    assert record["observed"]["fields"] == [["user", "str", True], ["role", "str", False]]


async def test_recording_protect_alone_vouches_for_nothing_else(tmp_path: Path) -> None:
    from reconciler.errors import PlanError

    project = project_for(tmp_path, "tidy", True)
    project.write(lookup_doc("vault", KINDS["static"]), DOMAIN_PRUNE)
    assert await project.apply() == 0
    project.settings.state_path.unlink()  # lost: the lookup can no longer be verified
    project.write(lookup_doc("vault", KINDS["static"], extra="protect: true"), DOMAIN_PRUNE)
    change = only_change((await project.plan()).plan)
    assert not change.request and change.unverified
    assert await project.apply() == 0
    plan = (await project.plan()).plan
    assert not plan.can_apply() and plan.unverified  # still not verified: nothing was sent
    project.write(DOMAIN_PRUNE)
    with pytest.raises(PlanError, match="protected lookup"):
        await project.plan()


def test_a_key_the_service_does_not_show_at_all_is_unverified_not_changed(tmp_path: Path) -> None:
    from reconciler.client import LookupMeta
    from reconciler.emulator.derive import derive
    from reconciler.plan.builder import compare

    project = project_for(tmp_path, "tidy", False)
    project.write(lookup_doc("w", KINDS["sliding"]))
    [want] = load_workspace([str(project.specs)]).desired
    shown = derive(want.endpoint or "", "acme", "w", want.body)
    del shown["recipe"]["windowMillis"]  # a service that does not echo the field at all
    result = compare(want, LookupMeta(name="w", deployConfig=shown), None)
    assert result.diff == [] and "recipe.windowMillis" in result.unverified
    shown["recipe"]["windowMillis"] = None  # shown as null: that is a difference
    result = compare(want, LookupMeta(name="w", deployConfig=shown), None)
    assert [d.path for d in result.diff] == ["recipe.windowMillis"]
