"""Policies (CEL rules every plan must pass) and checks (CEL assertions on live lookups)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from reconciler.browse import run_check
from reconciler.cli import app
from reconciler.cli_options import emit
from reconciler.commands import run_drift, run_plan
from reconciler.plan.guards import Guards
from reconciler.plan.model import Action, Change
from reconciler.plan.policies import Subject, context
from reconciler.spec import validate_paths
from reconciler.state.journal import Journal
from tests.planning import Project, lookup_doc

DOMAIN = "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: acme}\n"


def csv_lookup(
    name: str,
    *,
    labels: str = "",
    visibility: str = "creator-only",
    checks: str = "",
    domain: str = "acme",
) -> str:
    meta = f"\n  labels: {labels}" if labels else ""
    return (
        textwrap.dedent(f"""\
        apiVersion: reconciler/v1
        kind: Lookup
        metadata:
          domain: {domain}
          name: {name}""")
        + meta
        + textwrap.dedent(f"""
        spec:
          visibility: {visibility}
          {f"checks: {checks}" if checks else ""}
          csv:
            file: data/geo.csv
            hasHeader: true
            columns: [{{name: ip, type: IP4}}, {{name: country, type: STRING}}]
            key: {{type: column, column: ip}}
        """)
    )


def policy(name: str, rules: str, match: str = "{}") -> str:
    return textwrap.dedent(f"""\
        apiVersion: reconciler/v1
        kind: Policy
        metadata: {{name: {name}}}
        spec:
          match: {match}
          rules:
        """) + textwrap.indent(textwrap.dedent(rules), "    ")


# Written as a team would, not from this code: no pii lookup visible to all subdomains.
PII = policy(
    "pii-private",
    """\
    - expr: "change.action == 'delete' || after.visibility != 'all-subdomains'"
      message: lookups labelled pii never reach all subdomains
      enforcement: mandatory
    """,
    match='{labels: {pii: "true"}}',
)
SIZE = policy(
    "size",
    """\
    - expr: "csv == null || csv.bytes <= 10"
      message: no lookup over 10 bytes
      enforcement: advisory
    """,
)
OWNER = policy(
    "owner",
    """\
    - expr: "'owner' in lookup.labels"
      message: every lookup names its owner
      enforcement: soft-mandatory
    """,
)


def project_with(tmp_path: Path, *documents: str) -> Project:
    project = Project(tmp_path)
    project.write(DOMAIN, *documents)
    return project


async def plan_code(project: Project, **options: Any) -> int:
    """``reconciler plan``'s exit code, its output written as the command line writes it."""
    return emit(
        await run_plan(
            project.settings, [str(project.specs)], transport=project.transport(), **options
        )
    )


@pytest.mark.anyio
async def test_a_mandatory_rule_blocks_the_plan_naming_the_lookup(tmp_path: Path) -> None:
    project = project_with(
        tmp_path,
        csv_lookup("users", labels='{pii: "true"}', visibility="all-subdomains"),
        csv_lookup("geo", labels='{pii: "false"}', visibility="all-subdomains"),
        PII,
    )
    run = await project.plan()
    assert [(v.address, v.policy, v.enforcement) for v in run.plan.violations] == [
        ("acme/users", "pii-private", "mandatory")
    ]
    assert await plan_code(project) == 1
    assert await project.apply() == 1  # refused
    assert project.emulator.store.get("acme", "users") is None  # nothing was sent
    assert project.emulator.store.get("acme", "geo") is None


@pytest.mark.anyio
async def test_an_advisory_rule_only_warns(tmp_path: Path, capsys: Any) -> None:
    project = project_with(tmp_path, csv_lookup("geo", labels="{owner: soc}"), SIZE)
    assert await plan_code(project) == 0
    out = capsys.readouterr().out
    assert "size / rule 1 [advisory]: no lookup over 10 bytes" in out
    assert await project.apply() == 0
    assert project.emulator.store.get("acme", "geo") is not None


@pytest.mark.anyio
async def test_soft_mandatory_is_overridden_by_name_and_journaled(tmp_path: Path) -> None:
    project = project_with(tmp_path, csv_lookup("geo"), OWNER)
    assert await plan_code(project) == 1
    assert await project.apply() == 1
    guards = Guards(override_policies=("owner",))
    run = await project.plan(guards=guards)
    assert [v.overridden for v in run.plan.violations] == [True] and not run.plan.blocking
    assert await plan_code(project, guards=guards) == 0
    assert await project.apply(guards=guards) == 0
    journal = Journal.for_state(str(project.settings.state_path))
    overrides = [e for e in journal.entries() if e.type == "policy-override"]
    assert len(overrides) == 1
    entry = overrides[0]
    assert entry.address == "acme/geo" and entry.actor
    assert entry.payload["policy"] == "owner" and entry.payload["enforcement"] == "soft-mandatory"
    with pytest.raises(Exception, match="--override-policy names no Policy"):
        await project.plan(guards=Guards(override_policies=("ownr",)))


def test_a_policy_that_does_not_compile_is_an_error_at_its_line(tmp_path: Path) -> None:
    project = project_with(
        tmp_path,
        csv_lookup("geo"),
        policy(
            "broken",
            """\
            - expr: "after.visibility =="
              message: x
            - expr: "numEntries > 1"
              message: y
            """,
        ),
    )
    result = validate_paths([str(project.specs)])
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert len(errors) == 2
    first, second = sorted(errors, key=lambda d: d.line or 0)
    assert first.path.endswith("lookups.yaml") and "does not compile" in first.message
    assert second.line == first.line + 2 and "'numEntries', which it cannot see" in second.message
    # the line is the rule's own line in the file
    lines = (project.specs / "lookups.yaml").read_text().splitlines()
    assert "after.visibility ==" in lines[first.line - 1]


@pytest.mark.anyio
async def test_match_by_domain_glob_name_glob_label_and_kind(tmp_path: Path) -> None:
    deny = """\
    - expr: "false"
      message: matched
      enforcement: advisory
    """
    project = project_with(
        tmp_path,
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: globex}\n",
        csv_lookup("prod_geo", labels="{env: prod}"),
        csv_lookup("dev_geo", labels="{env: dev}"),
        csv_lookup("prod_geo", domain="globex"),
        lookup_doc(
            "prod_q", "staticQuery: {query: 'from a select k', key: {type: column, column: k}}"
        ),
        policy("by-domain", deny, '{domains: ["glob*"]}'),
        policy("by-name", deny, '{names: ["prod_*"]}'),
        policy("by-label", deny, "{labels: {env: prod}}"),
        policy("by-kind", deny, "{kinds: [staticQuery]}"),
        policy("all-of", deny, '{domains: ["acme"], names: ["prod_*"], kinds: [csv]}'),
    )
    run = await project.plan()
    seen = {(v.policy, v.address) for v in run.plan.violations}
    assert seen == {
        ("by-domain", "globex/prod_geo"),
        ("by-name", "acme/prod_geo"),
        ("by-name", "globex/prod_geo"),
        ("by-name", "acme/prod_q"),
        ("by-label", "acme/prod_geo"),
        ("by-kind", "acme/prod_q"),
        ("all-of", "acme/prod_geo"),
    }


def test_a_rule_that_cannot_be_evaluated_fails_closed() -> None:
    import cel

    from reconciler.spec.policies import Expression

    expression = Expression(
        "after.visibility == 'creator-only'",
        "p.yaml:3",
        cel.compile("after.visibility == 'creator-only'"),
        frozenset({"after"}),
    )
    delete = Change(
        address="a/b",
        domain="a",
        name="b",
        action=Action.DELETE,
        before={"visibility": "creator-only"},
    )
    passed, error = expression.evaluate(context(delete, Subject(), None))
    assert passed is False and error


def test_the_readme_ready_rules_mean_what_they_say() -> None:
    """The five rules of the README's policies section, on changes that pass and that fail."""
    import cel

    from reconciler.plan.model import CsvChange

    rules = {
        "protected": "lookup.protect",
        "size": "csv == null || csv.bytes <= 50 * 1024 * 1024",
        "creator-only": "change.action == 'delete' || after.visibility == 'creator-only'",
        "owner": "'owner' in lookup.labels",
        "shrink": "csv == null || csv.before_rows == null || csv.rows >= 0.7 * csv.before_rows",
    }
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert all(f'"{rule}"' in readme for rule in rules.values())

    def ok(rule: str, change: Change, subject: Subject) -> bool:
        return bool(cel.compile(rules[rule]).execute(context(change, subject, None)))

    def update(**csv: Any) -> Change:
        return Change(
            address="a/feed",
            domain="a",
            name="feed",
            action=Action.UPDATE,
            before={"visibility": "creator-only"},
            after={"visibility": "all-subdomains"},
            csv=CsvChange(**csv) if csv else None,
        )

    assert ok("protected", update(), Subject(protect=True))
    assert not ok("protected", update(), Subject())
    assert ok("size", update(), Subject(rows=10, size=1024))
    assert not ok("size", update(), Subject(rows=10, size=60 * 1024 * 1024))
    assert ok("size", update(), Subject())  # no local CSV
    assert not ok("creator-only", update(), Subject())
    assert ok("owner", update(), Subject(labels={"owner": "soc"}))
    assert not ok("owner", update(), Subject(labels={"team": "soc"}))
    assert ok("shrink", update(before_rows=100, after_rows=80, removed=20), Subject(rows=80))
    assert not ok("shrink", update(before_rows=100, after_rows=60, removed=40), Subject(rows=60))


def test_validate_policies_judges_the_specs_offline(
    tmp_path: Path, runner: Any, monkeypatch: Any
) -> None:
    project = project_with(
        tmp_path,
        csv_lookup("users", labels='{pii: "true"}', visibility="all-subdomains"),
        PII,
        SIZE,
    )
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["validate", "specs"]).exit_code == 0  # policies not asked for
    result = runner.invoke(app, ["validate", "specs", "--policies", "--format", "json"])
    assert result.exit_code == 1
    found = {
        (d["severity"], d["message"].split(":")[0])
        for d in json.loads(result.stdout)["diagnostics"]
    }
    assert found == {
        ("error", "policy pii-private / rule 1 [mandatory]"),
        ("warning", "policy size / rule 1 [advisory]"),
    }
    assert project.specs.is_dir()


# --- checks ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_check_failing_after_apply_fails_the_change_without_rolling_back(
    tmp_path: Path,
) -> None:
    project = project_with(
        tmp_path,
        csv_lookup("geo", checks='["numEntries >= 1000"]'),
        csv_lookup("other", checks='["numEntries >= 1"]'),
    )
    assert await project.apply() == 1
    assert project.emulator.store.get("acme", "geo") is not None  # applied, not rolled back
    journal = Journal.for_state(str(project.settings.state_path))
    failed = [e for e in journal.entries() if e.type == "check"]
    assert [e.address for e in failed] == ["acme/geo"]
    assert "numEntries >= 1000" in failed[0].message and "numEntries = 3.0" in failed[0].message
    assert "acme/geo" in (await project.plan()).state.lookups  # the record stays


@pytest.mark.anyio
async def test_drift_turns_red_when_rows_vanish_out_of_band(tmp_path: Path) -> None:
    project = Project(tmp_path)
    project.write(
        "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: acme}\n"
        "spec: {checks: ['numEntries >= 3', \"status == 'deployed'\"]}\n",
        csv_lookup("geo", checks='["numEntries >= 0.7 * previous.numEntries"]'),
    )
    assert await project.apply() == 0
    drift = emit(
        await run_drift(project.settings, [str(project.specs)], transport=project.transport())
    )
    assert drift == 0
    assert (
        emit(await run_check(project.settings, [str(project.specs)], transport=project.transport()))
        == 0
    )
    project.emulator.store.drop_rows("acme", "geo", keep=1)
    run = await project.plan(strict_protect=False)
    failed = sorted(c.expr for c in run.plan.failed_checks)
    assert failed == ["numEntries >= 0.7 * previous.numEntries", "numEntries >= 3"]
    drift = emit(
        await run_drift(project.settings, [str(project.specs)], transport=project.transport())
    )
    assert drift == 2
    assert (
        emit(await run_check(project.settings, [str(project.specs)], transport=project.transport()))
        == 1
    )


@pytest.mark.anyio
async def test_check_fails_a_lookup_that_does_not_exist(tmp_path: Path) -> None:
    project = project_with(tmp_path, csv_lookup("geo", checks='["numEntries >= 1"]'))
    paths = [str(project.specs)]
    said = await run_check(
        project.settings, paths, output_format="json", transport=project.transport()
    )
    assert said.code == 1
    data = json.loads(said.stdout)
    assert data["passed"] is False
    assert data["checks"][0]["error"] == "the lookup does not exist"


def test_a_check_naming_an_unknown_variable_is_an_error(tmp_path: Path) -> None:
    project = project_with(tmp_path, csv_lookup("geo", checks='["numEntires >= 1"]'))
    result = validate_paths([str(project.specs)])
    [error] = [d for d in result.diagnostics if d.severity == "error"]
    assert "'numEntires'" in error.message and "did you mean 'numEntries'" in (error.hint or "")


@pytest.mark.anyio
async def test_a_status_check_reads_the_last_job_when_the_service_shows_no_last_status(
    tmp_path: Path,
) -> None:
    from reconciler.emulator import EmulatorConfig

    config = EmulatorConfig(
        create_latency=0.0, deploy_latency=0.02, delete_latency=0.02, deploy_config_null=True
    )
    project = Project(tmp_path, config)
    project.write(DOMAIN, csv_lookup("geo", checks="[\"status == 'deployed'\"]"))
    assert await project.apply() == 0
    async with project.client() as client:
        assert (await client.get_lookup("acme", "geo")).lastStatus is None
    run = await project.plan(strict_protect=False)
    [result] = run.plan.checks
    assert result.passed and result.observed["status"] == "deployed"


@pytest.mark.anyio
@pytest.mark.waits
async def test_a_saved_plan_keeps_its_overrides_and_is_judged_again(tmp_path: Path) -> None:
    from reconciler.commands import ApplyRequest, run_apply

    project = project_with(tmp_path, csv_lookup("geo"), OWNER)
    refused, allowed = tmp_path / "refused.json", tmp_path / "allowed.json"
    assert await plan_code(project, out=refused) == 1  # saved, but it may not be applied
    assert await plan_code(project, out=allowed, guards=Guards(override_policies=("owner",))) == 0

    async def apply_saved(path: Path) -> int:
        request = ApplyRequest(plan_file=path, transport=project.transport(), env={})
        return emit(await run_apply(project.settings, [str(project.specs)], request))

    assert await apply_saved(refused) == 1
    assert project.emulator.store.get("acme", "geo") is None
    assert await apply_saved(allowed) == 0
    assert project.emulator.store.get("acme", "geo") is not None
    journal = Journal.for_state(str(project.settings.state_path))
    assert [e.payload["policy"] for e in journal.entries() if e.type == "policy-override"] == [
        "owner"
    ]


@pytest.mark.anyio
async def test_an_unquoted_label_matches_as_its_text(tmp_path: Path) -> None:
    """``pii: true`` written without quotes is the label "true" a policy's match names."""
    project = project_with(
        tmp_path,
        csv_lookup("users", labels="{pii: true, tier: 1}", visibility="all-subdomains"),
        PII,
    )
    run = await project.plan()
    assert [(v.address, v.policy) for v in run.plan.violations] == [("acme/users", "pii-private")]


# --- the fast judge against rule-by-rule evaluation ---------------------------------------------

_PROPERTY_RULES = (
    "lookup.labels.tier == 'gold' || lookup.name.startsWith('x')",
    "change.action != 'delete' || lookup.protect",
    "after == null || after.visibility == 'creator-only'",
    "has(lookup.labels.owner)",
    "domain.wave >= 0 && size(lookup.name) < 3",
    "after == null || after.recipe.key.type != 'column'",
)


def _property_policies(by_name: bool) -> list[Any]:
    import cel

    from reconciler.spec.model import PolicyMatch
    from reconciler.spec.policies import Expression, Policy, Rule

    def rule(policy: str, i: int) -> Rule:
        source = _PROPERTY_RULES[i]
        variables = frozenset(v for v in ("lookup", "change", "after", "domain") if v in source)
        expression = Expression(source, "p.yaml:1", cel.compile(source), variables)
        return Rule(policy, f"rule {i}", expression, f"rule {i}", "advisory")

    matches = [
        PolicyMatch(),
        PolicyMatch(labels={"tier": "gold"}),
        PolicyMatch(domains=["a"]),
        PolicyMatch(names=["x*"] if by_name else ["*"], labels={"owner": "soc"}),
    ]
    return [
        Policy(f"p{n}", match, tuple(rule(f"p{n}", (n + k) % 6) for k in range(3)), "p.yaml:1")
        for n, match in enumerate(matches)
    ]


@pytest.mark.parametrize("by_name", [False, True])
def test_the_judge_finds_what_rule_by_rule_evaluation_finds(by_name: bool) -> None:
    """Consecutive changes matching other policies, reading other fields, with fields that come
    and go: the judge (which skips what did not change) finds exactly the failures of evaluating
    every matching rule on its own context."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from reconciler.plan.model import Plan
    from reconciler.plan.policies import domain_facts, evaluate

    policies = _property_policies(by_name)
    labels = st.dictionaries(
        st.sampled_from(["tier", "owner"]), st.sampled_from(["gold", "soc", "x"]), max_size=2
    )
    after = st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"visibility": st.sampled_from(["creator-only", "all-subdomains"])},
            optional={"recipe.key.type": st.sampled_from(["column", "first-column"])},
        ),
    )
    one = st.tuples(
        st.sampled_from(["a", "b"]),
        st.sampled_from(["x1", "y", "xyz"]),
        st.sampled_from([Action.CREATE, Action.UPDATE, Action.DELETE, Action.NOOP]),
        after,
        labels,
        st.booleans(),
    )

    @settings(max_examples=150)
    @given(st.lists(one, min_size=1, max_size=12))
    def check(steps: list[tuple[Any, ...]]) -> None:
        changes, subjects = [], {}
        for n, (domain, name, action, config, tags, protect) in enumerate(steps):
            address = f"{domain}/{name}{n}"
            changes.append(
                Change(
                    address=address,
                    domain=domain,
                    name=name,
                    action=action,
                    before={"visibility": "creator-only"},
                    after=config,
                )
            )
            subjects[address] = Subject(labels=tags, protect=protect)
        judged = evaluate(Plan(changes=tuple(changes)), policies, subjects, {})
        found = {(v.address, v.policy, v.rule) for v in judged.violations}
        expected = set()
        for change in changes:
            subject = subjects[change.address]
            variables = context(change, subject, domain_facts(change.domain))
            for policy in policies:
                if policy.matches(change.domain, change.name, change.kind, subject.labels):
                    for rule in policy.rules:
                        if not rule.expression.evaluate(variables)[0]:
                            expected.add((change.address, policy.name, rule.name))
        assert found == expected

    check()


def test_a_field_gone_while_other_policies_matched_is_seen_gone() -> None:
    """A field one policy reads vanishes from the config while the changes in between matched
    only a policy that does not read it: the judge must see it gone, not reuse the old result."""
    import cel

    from reconciler.plan.model import Plan
    from reconciler.plan.policies import evaluate
    from reconciler.spec.model import PolicyMatch
    from reconciler.spec.policies import Expression, Policy, Rule

    def one(name: str, source: str, match: PolicyMatch) -> Policy:
        expression = Expression(source, "p.yaml:1", cel.compile(source), frozenset({"after"}))
        return Policy(name, match, (Rule(name, "r", expression, "m", "advisory"),), "p.yaml:1")

    policies = [
        one("all", "after.visibility == 'creator-only'", PolicyMatch()),
        one("gold", "has(after.recipe)", PolicyMatch(labels={"tier": "gold"})),
    ]
    configs = [
        ("g1", {"visibility": "creator-only", "recipe.key.type": "first-column"}, True),
        ("p1", {"visibility": "creator-only", "recipe.key.type": "column"}, False),
        ("g2", {"visibility": "creator-only"}, True),  # no recipe now
    ]
    changes = [
        Change(address=f"a/{n}", domain="a", name=n, action=Action.UPDATE, after=after)
        for n, after, _ in configs
    ]
    subjects = {
        f"a/{n}": Subject(labels={"tier": "gold"} if gold else {}) for n, _, gold in configs
    }
    judged = evaluate(Plan(changes=tuple(changes)), policies, subjects, {})
    assert [(v.address, v.policy) for v in judged.violations] == [("a/g2", "gold")]


def test_the_cel_bindings_come_without_their_command_line() -> None:
    """``import cel`` runs the package's REPL imports (prompt_toolkit, pygments, rich): 100 ms
    of every process that reads a Policy. The bindings are loaded without them, and the real
    ``cel.cli`` is still there for whoever imports it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from reconciler.spec.policies import cel_bindings\n"
        "cel = cel_bindings()\n"
        "assert cel.evaluate('1 + 1 == 2') is True\n"
        "print(sorted(m for m in ('prompt_toolkit', 'pygments', 'cel.cli') if m in sys.modules))\n"
        "import cel.cli\n"
        "print(hasattr(cel.cli, 'main') or hasattr(cel.cli, 'app'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["[]", "True"], done.stdout + done.stderr
