"""Many domains from one spec: fan-out by list and by labels, Overlays of fields and of rows, and
every way an Overlay or a selector can be wrong (an error, never a silent nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.plan.model import Action
from reconciler.spec import validate_paths
from reconciler.views.text import plan as render_text
from tests.planning import Project

pytestmark = pytest.mark.anyio

DOMAINS = """
apiVersion: reconciler/v1
kind: Domain
metadata: {name: initech, labels: {tier: gold}}
---
apiVersion: reconciler/v1
kind: Domain
metadata: {name: globex, labels: {tier: gold, region: eu}}
---
apiVersion: reconciler/v1
kind: Domain
metadata: {name: umbrella, labels: {tier: silver}}
"""
BAD_IPS = "ip,reason\n10.0.0.9,scanner\n10.0.0.10,botnet\n192.0.2.1,phishing\n"


def fanned(targets: str = "domains: [initech, globex, umbrella]") -> str:
    return f"""
apiVersion: reconciler/v1
kind: Lookup
metadata:
  name: bad_ips
  {targets}
spec:
  csv:
    file: data/bad_ips.csv
    hasHeader: true
    columns: [{{name: ip, type: IP4}}, {{name: reason, type: STRING}}]
    key: {{type: column, column: ip}}
"""


def overlay(spec: str, *, domain: str = "globex", name: str = "bad_ips") -> str:
    return f"""
apiVersion: reconciler/v1
kind: Overlay
metadata: {{domain: {domain}, name: {name}}}
spec:
{spec}
"""


def project(tmp_path: Path, *documents: str) -> Project:
    p = Project(tmp_path)
    (p.specs / "data" / "bad_ips.csv").write_text(BAD_IPS)
    p.write(DOMAINS, *documents)
    return p


def errors(p: Project) -> list[str]:
    return [f"{d.field}: {d.message}" for d in validate_paths([str(p.specs)]).errors]


async def test_a_list_fans_one_spec_out_to_one_lookup_per_domain(tmp_path: Path) -> None:
    p = project(tmp_path, fanned())
    run = await p.plan()
    assert [c.address for c in run.plan.changes] == [
        "globex/bad_ips",
        "initech/bad_ips",
        "umbrella/bad_ips",
    ]
    assert all(c.action is Action.CREATE for c in run.plan.changes)
    assert await p.apply() == 0
    for domain in ("initech", "globex", "umbrella"):
        assert len(p.emulator.store.rows_of(domain, "bad_ips")) == 3
    assert not (await p.plan()).plan.can_apply()


async def test_a_selector_fans_out_to_the_domains_whose_labels_match(tmp_path: Path) -> None:
    p = project(tmp_path, fanned("domainSelector: {labels: {tier: gold}}"))
    run = await p.plan()
    assert [c.address for c in run.plan.changes] == ["globex/bad_ips", "initech/bad_ips"]
    p.write(DOMAINS, fanned("domainSelector: {labels: {tier: gold, region: eu}}"))
    assert [c.address for c in (await p.plan()).plan.changes] == ["globex/bad_ips"]


async def test_a_selector_that_matches_nothing_is_an_error_not_an_empty_fan_out(
    tmp_path: Path,
) -> None:
    p = project(tmp_path, fanned("domainSelector: {labels: {tier: platinum}}"))
    found = errors(p)
    assert found == [
        "metadata.domainSelector.labels: domainSelector {'tier': 'platinum'} matches no Domain "
        "document"
    ]


async def test_an_overlay_changes_one_domain_and_the_plan_names_it(tmp_path: Path) -> None:
    p = project(tmp_path, fanned())
    assert await p.apply() == 0
    p.write(DOMAINS, fanned(), overlay("  visibility: all-subdomains"))
    run = await p.plan()
    (change,) = run.plan.actionable
    assert change.address == "globex/bad_ips" and change.action is Action.UPDATE
    assert [d.path for d in change.diff] == ["visibility"]
    lines = (p.specs / "lookups.yaml").read_text().splitlines()
    start = lines.index("kind: Overlay")  # the document begins on the line before (1-based: this)
    assert change.overlay == f"{p.specs / 'lookups.yaml'}:{start}"
    assert f"[overlay {change.overlay}]" in render_text(run.plan)
    assert await p.apply() == 0
    metas = {m.domain: m for m in await p.client().all_lookups("globex")}
    assert metas["globex"].visibility == "all-subdomains"
    assert not (await p.plan()).plan.can_apply()


async def test_an_overlay_adds_replaces_and_removes_rows_for_its_domain_only(
    tmp_path: Path,
) -> None:
    p = project(
        tmp_path,
        fanned(),
        overlay(
            "  csv:\n    patch:\n      add: data/globex.csv\n      remove: ['10.0.0.9']",
        ),
    )
    (p.specs / "data" / "globex.csv").write_text(
        "ip,reason\n203.0.113.5,honeypot\n192.0.2.1,confirmed\n"
    )
    assert await p.apply() == 0
    assert sorted(p.emulator.store.rows_of("globex", "bad_ips")) == [
        "10.0.0.10,botnet",
        "192.0.2.1,confirmed",
        "203.0.113.5,honeypot",
    ]
    assert len(p.emulator.store.rows_of("initech", "bad_ips")) == 3
    assert not (await p.plan()).plan.can_apply()
    # A new patch row is a CSV change of globex alone.
    (p.specs / "data" / "globex.csv").write_text(
        "ip,reason\n203.0.113.5,honeypot\n192.0.2.1,confirmed\n198.51.100.1,new\n"
    )
    (change,) = (await p.plan()).plan.actionable
    assert change.address == "globex/bad_ips" and change.csv is not None


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        (
            [overlay("  visibility: all-subdomains", name="bad_ip")],
            "metadata.name: the overlay of globex/bad_ip matches no fanned-out lookup",
        ),
        (
            [overlay("  visibility: all-subdomains", domain="acme")],
            "metadata.name: the overlay of acme/bad_ips matches no fanned-out lookup",
        ),
        (
            [overlay("  csv:\n    patch: {remove: ['10.9.9.9']}")],
            "spec.csv.patch.remove[0]: key '10.9.9.9' is not in bad_ips.csv",
        ),
        (
            [overlay("  csv:\n    patch: {add: data/wrong.csv}")],
            ": header ['address', 'reason'] does not match the lookup's columns ['ip', 'reason']",
        ),
        (
            [overlay("  visibility: everyone")],
            "spec.visibility: 'everyone' is not allowed; expected 'creator-only' or 'all-subdomains'",
        ),
    ],
    ids=["no-such-lookup", "no-such-domain", "missing-key", "wrong-header", "bad-merge"],
)
async def test_overlay_mistakes_are_errors(
    tmp_path: Path, documents: list[str], expected: str
) -> None:
    p = project(tmp_path, fanned(), *documents)
    (p.specs / "data" / "wrong.csv").write_text("address,reason\n203.0.113.5,x\n")
    found = errors(p)
    assert any(expected in line for line in found), found


async def test_an_overlay_of_a_single_domain_lookup_says_to_edit_its_spec(tmp_path: Path) -> None:
    single = fanned().replace("domains: [initech, globex, umbrella]", "domain: globex")
    p = project(tmp_path, single, overlay("  visibility: all-subdomains"))
    assert errors(p) == [
        "metadata.name: globex/bad_ips is not a fanned-out lookup: edit its own spec instead"
    ]


async def test_fan_out_metadata_mistakes(tmp_path: Path) -> None:
    both = fanned("domain: acme\n  domains: [globex]")
    twice = fanned("domains: [globex, globex]")
    clash = (
        fanned().replace("name: bad_ips", "name: bad_ips") + "---\n" + fanned("domains: [globex]")
    )
    for documents, expected in (
        (both, "give exactly one of 'domain', 'domains' and 'domainSelector'"),
        (twice, "'domains' lists a domain twice"),
        (clash, "globex/bad_ips is already defined at"),
    ):
        p = project(tmp_path, documents)
        assert any(expected in line for line in errors(p)), (expected, errors(p))
