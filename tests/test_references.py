"""Lookups that use lookups: finding references in LINQ and in files, validating them, ordering
apply by them, refusing to break them, and ``reconciler refs``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import app
from reconciler.emulator import EmulatorConfig
from reconciler.errors import JobFailed, PlanError, SettingsError
from reconciler.linq import lookup_refs
from reconciler.plan.guards import Guards
from reconciler.plan.model import Action
from reconciler.spec import validate_paths
from reconciler.views.mermaid import graph
from tests.planning import FAST_POLL, Project

CORPUS = yaml.safe_load((Path(__file__).parent / "corpus" / "linq_references.yaml").read_text())


@pytest.mark.parametrize("case", CORPUS, ids=[c["name"] for c in CORPUS])
def test_references_in_the_linq_corpus(case: dict[str, Any]) -> None:
    found = [[r.table, r.column, r.line] for r in lookup_refs(case["query"])]
    assert found == case["refs"]


# --- a repository: 3 CSV lookups, 2 query lookups reading them, an alerts/ folder ----------------

DOMAIN = """\
apiVersion: reconciler/v1
kind: Domain
metadata: {name: acme}
spec:
  references: ["alerts/**/*.json"]
"""

CSVS = {
    "geo": (
        "ip,country,asn\n10.0.0.1,ES,10\n",
        "[{name: ip, type: IP4}, {name: country, type: STRING}, {name: asn, type: INT4}]",
        "ip",
    ),
    "bad_ips": (
        "ip,score\n10.0.0.9,90\n",
        "[{name: ip, type: IP4}, {name: score, type: INT4}]",
        "ip",
    ),
    "users": (
        "user,team\nalice,soc\n",
        "[{name: user, type: STRING}, {name: team, type: STRING}]",
        "user",
    ),
}

QUERIES = """\
apiVersion: reconciler/v1
kind: Lookup
metadata: {domain: acme, name: risky_sources}
spec:
  staticQuery:
    query: |
      from firewall.all.traffic
      where lu("bad_ips", "score", srcIp) > 50
      select srcIp, `lu/geo/country`(srcIp) as country
      group by srcIp, country
    key: {type: column, column: srcIp}
---
apiVersion: reconciler/v1
kind: Lookup
metadata: {domain: acme, name: team_logins}
spec:
  periodicQuery:
    query: from box.unix select user, lu("users", "team", user) as team group by user, team
    key: {type: column, column: user}
    refreshPeriod: 1h
"""

ALERT = {
    "name": "traffic from sanctioned countries",
    "query": 'from firewall.all.traffic where lu("geo", "country", srcIp) = "KP" select srcIp',
}


def csv_lookup(name: str, columns: str | None = None, state: str = "present") -> str:
    _, declared, key = CSVS[name]
    return textwrap.dedent(f"""\
        apiVersion: reconciler/v1
        kind: Lookup
        metadata: {{domain: acme, name: {name}}}
        spec:
          state: {state}
          csv:
            file: data/{name}.csv
            hasHeader: true
            columns: {columns or declared}
            key: {{type: column, column: {key}}}
        """)


def repository(root: Path, config: EmulatorConfig | None = None) -> Project:
    project = Project(root, config)
    for name, (rows, _, _) in CSVS.items():
        (project.specs / "data" / f"{name}.csv").write_text(rows)
    (project.specs / "domain.yaml").write_text(DOMAIN)
    project.write(*(csv_lookup(n) for n in CSVS), file="csv.yaml")
    (project.specs / "queries.yaml").write_text(QUERIES)
    alerts = project.specs / "alerts" / "network"
    alerts.mkdir(parents=True)
    (alerts / "sanctioned.json").write_text(json.dumps(ALERT, indent=2) + "\n")
    return project


ALERT_FILE = "alerts/network/sanctioned.json:3"


def errors(result: Any) -> list[str]:
    return [d.render() for d in result.diagnostics if d.severity == "error"]


def warnings(result: Any) -> list[str]:
    return [d.render() for d in result.diagnostics if d.severity == "warning"]


def test_the_uses_are_found_with_their_file_and_line(tmp_path: Path) -> None:
    project = repository(tmp_path)
    result = validate_paths([str(project.specs)])
    assert errors(result) == [] and warnings(result) == []
    found = sorted(
        (Path(u.path).name, u.line, u.address, u.column, u.user) for u in result.references.uses
    )
    assert found == [
        ("queries.yaml", 8, "acme/bad_ips", "score", "acme/risky_sources"),
        ("queries.yaml", 9, "acme/geo", "country", "acme/risky_sources"),
        ("queries.yaml", 18, "acme/users", "team", "acme/team_logins"),
        ("sanctioned.json", 3, "acme/geo", "country", None),
    ]


@pytest.mark.anyio
async def test_everything_is_created_from_scratch_in_one_run_in_the_order_of_the_graph(
    tmp_path: Path,
) -> None:
    project = repository(tmp_path)
    run = await project.plan()
    order = {c.address: c.depends_on for c in run.plan.changes}
    assert order["acme/risky_sources"] == ["acme/bad_ips", "acme/geo"]
    assert order["acme/team_logins"] == ["acme/users"]
    assert order["acme/geo"] == [] and order["acme/users"] == []
    used = {c.address: len(c.used_by) for c in run.plan.changes}
    assert used == {
        "acme/bad_ips": 1,
        "acme/geo": 2,
        "acme/users": 1,
        "acme/risky_sources": 0,
        "acme/team_logins": 0,
    }
    assert await project.apply() == 0
    stored = project.emulator.store
    for name in ("risky_sources", "team_logins"):
        row = stored.get("acme", name)
        assert stored.latest_status("acme", name, row.last_job)["code"] == "deploy.ok"
    assert (await project.plan()).plan.can_apply() is False


@pytest.mark.anyio
async def test_the_emulator_fails_a_query_lookup_whose_lookup_is_not_there_yet(
    tmp_path: Path,
) -> None:
    """What makes the order test above mean something: without the order, the job fails."""
    project = repository(tmp_path)
    body = {
        "query": 'from a select lu("geo", "country", ip) as c',
        "key": {"type": "column", "column": "c"},
    }
    async with project.client() as client:
        answer = await client.deploy("POST", "deploy-static-query", "acme", "q", body)
        assert answer.job_id is not None
        with pytest.raises(JobFailed) as failed:
            await client.wait_for_job("acme", "q", answer.job_id, timeout=5, policy=FAST_POLL)
    assert "reads lookup geo, which does not exist" in str(failed.value)


@pytest.mark.anyio
async def test_no_wait_is_refused_when_the_graph_orders_the_changes(tmp_path: Path) -> None:
    project = repository(tmp_path)
    with pytest.raises(SettingsError, match="--no-wait cannot be used here"):
        await project.apply(wait=False)
    assert project.emulator.store.get("acme", "geo") is None  # nothing was sent


@pytest.mark.anyio
async def test_a_failed_lookup_stops_the_query_lookups_that_read_it(tmp_path: Path) -> None:
    config = EmulatorConfig(
        create_latency=0.0, deploy_latency=0.02, delete_latency=0.02, job_failure_pattern="users"
    )
    project = repository(tmp_path, config)
    assert await project.apply() == 1
    assert project.emulator.store.get("acme", "team_logins") is None  # never sent
    assert project.emulator.store.get("acme", "risky_sources") is not None  # independent of it


@pytest.mark.anyio
async def test_deleting_a_used_lookup_is_refused_naming_the_alert(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    # geo is deleted; the query lookup reading it is changed to stop reading it, the alert is not
    (project.specs / "queries.yaml").write_text(
        QUERIES.replace(", `lu/geo/country`(srcIp) as country", "").replace(
            "group by srcIp, country", "group by srcIp"
        )
    )
    project.write(
        csv_lookup("geo", state="absent"),
        csv_lookup("bad_ips"),
        csv_lookup("users"),
        file="csv.yaml",
    )
    with pytest.raises(PlanError) as refused:
        await project.plan()
    assert "acme/geo" in refused.value.message
    assert ALERT_FILE in refused.value.message
    assert "destroys it" in refused.value.message
    assert "risky_sources" not in refused.value.message  # that use went in the same change
    # the alert removed in the same change: through
    (project.specs / "alerts" / "network" / "sanctioned.json").unlink()
    run = await project.plan()
    assert [c.action for c in run.plan.changes if c.address == "acme/geo"] == [Action.DELETE]


@pytest.mark.anyio
async def test_dropping_a_used_column_is_refused_naming_the_alert(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    (project.specs / "data" / "geo.csv").write_text("ip,asn\n10.0.0.1,10\n")
    project.write(
        csv_lookup("geo", "[{name: ip, type: IP4}, {name: asn, type: INT4}]"),
        csv_lookup("bad_ips"),
        csv_lookup("users"),
        file="csv.yaml",
    )
    result = validate_paths([str(project.specs)])
    refused = errors(result)
    assert any(ALERT_FILE in e and "'country'" in e for e in refused), refused
    assert any("queries.yaml:9" in e and "'country'" in e for e in refused), refused


@pytest.mark.anyio
async def test_changing_a_used_key_type_is_refused_then_allowed(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    project.write(
        csv_lookup(
            "geo",
            "[{name: ip, type: STRING}, {name: country, type: STRING}, {name: asn, type: INT4}]",
        ),
        csv_lookup("bad_ips"),
        csv_lookup("users"),
        file="csv.yaml",
    )
    with pytest.raises(PlanError) as refused:
        await project.plan()
    message = refused.value.message
    assert ALERT_FILE in message and "queries.yaml:9 (in acme/risky_sources)" in message
    assert "changes its key ip's type (IP4 → STRING)" in message
    allowed = await project.plan(guards=Guards(allow_breaking=("acme/g*",)))
    assert [c.action for c in allowed.plan.changes if c.address == "acme/geo"] == [Action.UPDATE]
    drift = await project.plan(strict_protect=False)  # drift reports, never refuses
    assert any(ALERT_FILE in w for w in drift.plan.warnings)


@pytest.mark.anyio
async def test_a_column_type_change_breaks_only_the_uses_of_that_column(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    (project.specs / "data" / "geo.csv").write_text("ip,country,asn\n10.0.0.1,ES,ten\n")
    project.write(
        csv_lookup(
            "geo",
            "[{name: ip, type: IP4}, {name: country, type: STRING}, {name: asn, type: STRING}]",
        ),
        csv_lookup("bad_ips"),
        csv_lookup("users"),
        file="csv.yaml",
    )
    run = await project.plan()  # asn is used by nobody: through
    change = next(c for c in run.plan.changes if c.address == "acme/geo")
    assert change.action is Action.UPDATE and len(change.used_by) == 2
    (project.specs / "alerts" / "network" / "asn.json").write_text(
        '{"query": "from a select `lu/geo/asn`(ip) as asn"}\n'
    )
    with pytest.raises(PlanError) as refused:
        await project.plan()
    assert "alerts/network/asn.json:1" in refused.value.message
    assert "changes its column asn's type (INT4 → STRING)" in refused.value.message
    assert "sanctioned.json" not in refused.value.message


@pytest.mark.anyio
async def test_deletes_go_readers_first(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    (project.specs / "alerts" / "network" / "sanctioned.json").unlink()
    (project.specs / "queries.yaml").write_text(
        QUERIES.replace("spec:\n  staticQuery", "spec:\n  state: absent\n  staticQuery")
    )
    project.write(
        csv_lookup("geo", state="absent"),
        csv_lookup("bad_ips", state="absent"),
        csv_lookup("users"),
        file="csv.yaml",
    )
    run = await project.plan(guards=Guards(allow_mass_destroy=True))
    order = {c.address: c.depends_on for c in run.plan.changes if c.action is Action.DELETE}
    assert order == {
        "acme/geo": ["acme/risky_sources"],
        "acme/bad_ips": ["acme/risky_sources"],
        "acme/risky_sources": [],
    }
    assert await project.apply(guards=Guards(allow_mass_destroy=True)) == 0
    store = project.emulator.store
    assert all(store.get("acme", n) is None for n in ("geo", "bad_ips", "risky_sources"))


def test_validate_reports_unknown_lookups_cycles_and_dynamic_names(
    tmp_path: Path, runner: Any, monkeypatch: Any
) -> None:
    project = repository(tmp_path)
    (project.specs / "alerts" / "more.json").write_text(
        '{"a": "from x select lu(\\"builtin_geoip\\", \\"cc\\", ip)",\n'
        ' "b": "from x select lu(t, \\"c\\", k)"}\n'
    )
    (project.specs / "cycle.yaml").write_text(
        textwrap.dedent("""\
        apiVersion: reconciler/v1
        kind: Lookup
        metadata: {domain: acme, name: ping}
        spec:
          staticQuery:
            query: from a select k, lu("pong", "k", k) as v
            key: {type: column, column: k}
        ---
        apiVersion: reconciler/v1
        kind: Lookup
        metadata: {domain: acme, name: pong}
        spec:
          staticQuery:
            query: from a select k, lu("ping", "k", k) as v
            key: {type: column, column: k}
        """)
    )
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["validate", "specs", "--format", "json"])
    found = json.loads(result.stdout)["diagnostics"]
    by = {(d["path"], d["line"], d["severity"]): d["message"] for d in found}
    assert "builtin_geoip, which no spec defines" in by[("specs/alerts/more.json", 1, "warning")]
    assert "unresolved" in by[("specs/alerts/more.json", 2, "warning")]
    cycle = [d for d in found if "cycle" in d["message"]]
    assert len(cycle) == 1 and cycle[0]["severity"] == "error"
    assert "acme/ping → acme/pong → acme/ping" in cycle[0]["message"]
    assert result.exit_code == 1
    (project.specs / "cycle.yaml").unlink()
    assert runner.invoke(app, ["validate", "specs"]).exit_code == 0  # a warning only
    strict = runner.invoke(app, ["validate", "specs", "--strict"])
    assert strict.exit_code == 1 and "builtin_geoip" in strict.stderr
    ignored = runner.invoke(
        app, ["validate", "specs", "--strict", "--ignore-references", "builtin_*"]
    )
    assert ignored.exit_code == 0 and "builtin_geoip" not in ignored.stderr


def test_references_globs_stay_in_the_repository(tmp_path: Path) -> None:
    project = repository(tmp_path / "repo")
    (project.specs / "domain.yaml").write_text(
        DOMAIN.replace('["alerts/**/*.json"]', '["nothing/*.json", "../../**/*.json"]')
    )
    (tmp_path / "repo" / ".git").mkdir()  # the repository is repo/: ../../ leaves it
    # A file the glob reaches outside it (not whatever other tests left beside tmp_path).
    (tmp_path / "elsewhere.json").write_text("{}\n")
    result = validate_paths([str(project.specs)])
    assert any("matches no file" in w for w in warnings(result))
    assert any("reaches outside the repository" in e for e in errors(result))


def test_yaml_and_plain_files_are_read_too(tmp_path: Path) -> None:
    project = repository(tmp_path)
    (project.specs / "domain.yaml").write_text(
        DOMAIN.replace('["alerts/**/*.json"]', '["saved/**"]')
    )
    saved = project.specs / "saved"
    saved.mkdir()
    (saved / "q.yaml").write_text('title: x\nquery: |\n  from a\n  select lu("geo", "asn", ip)\n')
    (saved / "q.linq").write_text('from a\n\n// lu("geo", "nope", ip)\nselect `lu/users/team`(u)\n')
    result = validate_paths([str(project.specs)])
    files = sorted(
        (Path(u.path).name, u.line, u.address, u.column)
        for u in result.references.uses
        if u.user is None
    )
    assert files == [("q.linq", 4, "acme/users", "team"), ("q.yaml", 4, "acme/geo", "asn")]


def test_refs_prints_the_graph(tmp_path: Path, runner: Any, monkeypatch: Any) -> None:
    repository(tmp_path)
    monkeypatch.chdir(tmp_path)
    text = runner.invoke(app, ["refs", "acme/geo"])
    assert text.exit_code == 0, text.output
    assert "used by 2 reference(s)" in text.stdout
    assert "specs/alerts/network/sanctioned.json:3" in text.stdout
    assert "in acme/risky_sources" in text.stdout
    data = json.loads(runner.invoke(app, ["refs", "--format", "json"]).stdout)
    edges = {(e["from"], e["to"], e["column"]) for e in data["edges"]}
    assert edges == {
        ("acme/risky_sources", "acme/bad_ips", "score"),
        ("acme/risky_sources", "acme/geo", "country"),
        ("acme/team_logins", "acme/users", "team"),
        ("specs/alerts/network/sanctioned.json", "acme/geo", "country"),
    }
    mermaid = runner.invoke(app, ["refs", "--format", "mermaid"]).stdout
    assert mermaid.startswith("graph LR")
    assert mermaid.count("-->") == 4


def test_mermaid_labels_cannot_break_out() -> None:
    hostile = 'alerts/x"]\n  evil["pwn`\u0007.json'
    drawn = graph([(hostile, "acme/geo", 'c"|x')])
    body = drawn.splitlines()
    assert len(body) == 4  # graph, two nodes, one arrow: nothing injected a line
    assert "`" not in drawn and "\u0007" not in drawn and "evil" in body[1]
    assert all(line.count('"') in (0, 2) for line in body)


@pytest.mark.anyio
async def test_the_markdown_plan_embeds_the_affected_graph(tmp_path: Path) -> None:
    from reconciler import views

    project = repository(tmp_path)
    run = await project.plan()
    markdown = views.plan_view("markdown")(run.plan)
    assert "```mermaid" in markdown and "graph LR" in markdown
    assert "# used by 2 reference(s)" in markdown
    text = views.plan_view("text")(run.plan)
    assert "# starts after: acme/bad_ips, acme/geo" in text
    html = views.plan_view("html")(run.plan)
    assert "# used by 2 reference(s)" in html


@pytest.mark.anyio
async def test_a_query_lookup_its_spec_deletes_uses_nothing(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    absent = QUERIES.replace("spec:\n  staticQuery", "spec:\n  state: absent\n  staticQuery")
    (project.specs / "queries.yaml").write_text(absent)
    assert await project.apply() == 0  # risky_sources is gone
    (project.specs / "alerts" / "network" / "sanctioned.json").unlink()
    project.write(
        csv_lookup("geo", state="absent"),
        csv_lookup("bad_ips"),
        csv_lookup("users"),
        file="csv.yaml",
    )
    run = await project.plan()  # its old query read geo: no break, no warning
    assert [c.action for c in run.plan.changes if c.address == "acme/geo"] == [Action.DELETE]
    assert not any("risky_sources" in w for w in run.plan.warnings)


def test_alerts_beside_the_specs_folder_are_found_from_anywhere(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """No git, run from another folder: alerts/ beside specs/ is still where the glob looks."""
    project = repository(tmp_path)
    (project.specs / "alerts").rename(tmp_path / "alerts")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = validate_paths([str(project.specs)])
    files = [u for u in result.references.uses if u.user is None]
    assert [(Path(u.path).name, u.line) for u in files] == [("sanctioned.json", 3)]
    assert not [d for d in result.diagnostics if "references glob" in d.message]


@pytest.mark.anyio
async def test_changing_the_kind_of_a_used_key_is_refused(tmp_path: Path) -> None:
    project = repository(tmp_path)
    assert await project.apply() == 0
    first_column = csv_lookup("geo").replace(
        "key: {type: column, column: ip}", "key: {type: first-column}"
    )
    project.write(first_column, csv_lookup("bad_ips"), csv_lookup("users"), file="csv.yaml")
    with pytest.raises(PlanError) as refused:
        await project.plan()
    assert ALERT_FILE in refused.value.message
    assert "changes its key (key.type: column → first-column)" in refused.value.message
