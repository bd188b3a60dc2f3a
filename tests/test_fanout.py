"""Many domains from one spec: fan-out by list and by labels, Overlays of fields and of rows, and
every way an Overlay or a selector can be wrong (an error, never a silent nothing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from reconciler.apply.executor import ApplyOptions, Executor
from reconciler.client import LookupReader
from reconciler.client._transport import domain_of
from reconciler.emulator import EmulatorConfig, Grant
from reconciler.engine import make_plan, preflight
from reconciler.errors import PreflightError, ReconcilerError, SettingsError
from reconciler.plan.model import Action
from reconciler.settings import Credentials, Settings
from reconciler.spec import validate_paths
from reconciler.state import State
from reconciler.views.text import plan as render_text
from tests.planning import FAST_POLL, SECRETS, Project

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


# --- per-domain credentials, the preflight, waves ------------------------------------------------

AUTH_DOMAINS = """
apiVersion: reconciler/v1
kind: Domain
metadata: {name: initech}
spec: {auth: {tokenEnv: INITECH_TOKEN}}
---
apiVersion: reconciler/v1
kind: Domain
metadata: {name: globex}
spec: {auth: {tokenEnv: GLOBEX_TOKEN}, wave: 1}
---
apiVersion: reconciler/v1
kind: Domain
metadata: {name: umbrella}
spec: {wave: 1}
"""
TOKENS = {"INITECH_TOKEN": "tok-initech-1", "GLOBEX_TOKEN": "tok-globex-2"}


class Recording(httpx.ASGITransport):
    """The in-process transport, noting each request's path and Authorization header."""

    def __init__(self, app: Any) -> None:
        super().__init__(app=app)
        self.seen: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.path, request.headers.get("Authorization", "")))
        return await super().handle_async_request(request)


def authorised_project(tmp_path: Path, *documents: str) -> tuple[Project, Recording]:
    config = EmulatorConfig(
        create_latency=0.0,
        deploy_latency=0.02,
        delete_latency=0.0,
        grants=[
            Grant(token="tok-initech-1", domains=["initech"]),
            Grant(token="tok-globex-2", domains=["globex"]),
            Grant(token="tok-run-0", domains=["umbrella"]),
        ],
    )
    p = Project(tmp_path, config)
    (p.specs / "data" / "bad_ips.csv").write_text(BAD_IPS)
    p.settings = Settings(
        p.settings.base_url,
        Credentials(token=SecretStr("tok-run-0"), source="DEVO_TOKEN"),
        state_path=p.settings.state_path,
    )
    p.write(AUTH_DOMAINS, *documents)
    recording = Recording(p.app)
    p.transport = lambda: recording  # type: ignore[method-assign]
    return p, recording


async def test_each_domain_is_sent_only_its_own_credential(tmp_path: Path) -> None:
    p, recording = authorised_project(tmp_path, fanned())
    assert await p.apply(env={**SECRETS, **TOKENS}) == 0
    expected = {
        "initech": "Bearer tok-initech-1",
        "globex": "Bearer tok-globex-2",
        "umbrella": "Bearer tok-run-0",  # no auth of its own: the run's credential
    }
    assert {domain_of(path, "/lookup-api") for path, _ in recording.seen} == set(expected)
    for path, header in recording.seen:
        assert header == expected[str(domain_of(path, "/lookup-api"))], (path, header)
    assert not (await p.plan(env={**SECRETS, **TOKENS})).plan.can_apply()


async def test_a_domain_whose_credential_is_unset_stops_everything_before_any_request(
    tmp_path: Path,
) -> None:
    p, recording = authorised_project(tmp_path, fanned())
    with pytest.raises(SettingsError, match="domain globex: environment variable GLOBEX_TOKEN"):
        await p.apply(env={**SECRETS, "INITECH_TOKEN": "tok-initech-1"})
    assert recording.seen == []  # not a read, let alone a write, for any domain


async def test_the_preflight_refuses_when_a_domain_to_write_does_not_answer(
    tmp_path: Path,
) -> None:
    p, recording = authorised_project(tmp_path, fanned())
    run = await p.plan(env={**SECRETS, **TOKENS})
    p.emulator.config.grants[1].domains = ["somewhere-else"]  # globex's token revoked meanwhile
    async with LookupReader(p.settings, transport=recording) as reader:
        reader.use_domain_credentials(run.workspace.credentials(TOKENS))
        with pytest.raises(PreflightError, match="domain globex did not answer"):
            await preflight(reader, run.plan)
    # Through apply: the revoked domain fails before any write, to any domain.
    recording.seen.clear()
    with pytest.raises(ReconcilerError):
        await p.apply(env={**SECRETS, **TOKENS})
    writes = [path for path, _ in recording.seen if "/deploy-" in path]
    assert writes == [] and not p.emulator.store.rows_of("initech", "bad_ips")


async def test_a_failed_wave_stops_the_waves_after_it(tmp_path: Path) -> None:
    canary = fanned("domain: initech").replace("name: bad_ips", "name: canary_feed")
    p, _ = authorised_project(tmp_path, canary, fanned("domains: [globex, umbrella]"))
    p.emulator.config.job_failure_pattern = "canary_*"
    assert await p.apply(env={**SECRETS, **TOKENS}, output_format="json") == 1
    assert not p.emulator.store.rows_of("globex", "bad_ips")
    assert not p.emulator.store.rows_of("umbrella", "bad_ips")
    state = State.load(str(p.settings.state_path))
    assert set(state.lookups) == set()
    # The canary fixed: the next apply runs wave 0, then wave 1.
    p.emulator.config.job_failure_pattern = None
    assert await p.apply(env={**SECRETS, **TOKENS}) == 0
    assert len(p.emulator.store.rows_of("umbrella", "bad_ips")) == 3


async def test_waves_report_what_was_not_attempted_and_why(tmp_path: Path) -> None:
    from reconciler.apply.outcome import NOT_ATTEMPTED
    from reconciler.views.text import apply as apply_text

    canary = fanned("domain: initech").replace("name: bad_ips", "name: canary_feed")
    p, _ = authorised_project(tmp_path, canary, fanned("domains: [globex, umbrella]"))
    p.emulator.config.job_failure_pattern = "canary_*"
    run = await p.plan(env={**SECRETS, **TOKENS})
    async with p.client() as client:
        client.use_domain_credentials(run.workspace.credentials(TOKENS))
        executor = Executor(
            client,
            run.workspace.by_address(),
            run.state,
            options=ApplyOptions(poll=FAST_POLL, waves=run.workspace.waves, clock=p.clock.clock()),
            env=SECRETS,
        )
        outcomes = {o.address: o for o in await executor.run(run.plan)}
    assert outcomes["initech/canary_feed"].status == "failed"
    for address in ("globex/bad_ips", "umbrella/bad_ips"):
        assert outcomes[address].status == NOT_ATTEMPTED
        assert outcomes[address].message == "wave 1 not started: wave 0 had a failure"
    text = apply_text(list(outcomes.values()))
    assert (
        "globex/bad_ips (create): not attempted: wave 1 not started: wave 0 had a failure" in text
    )


async def test_text_and_markdown_show_the_grid_only_across_domains(tmp_path: Path) -> None:
    from reconciler.views.markdown import plan as render_markdown

    p = project(tmp_path, fanned())
    assert await p.apply() == 0
    p.write(DOMAINS, fanned(), overlay("  visibility: all-subdomains"))
    run = await p.plan()
    text = render_text(run.plan, verbose=True)
    assert "  bad_ips  ~       =        =" in text, text
    assert "| `bad_ips` | update | no change | no change |" in render_markdown(run.plan)
    assert "| lookup | globex | initech | umbrella |" in render_markdown(run.plan)
    single = Project(tmp_path / "single")
    (single.specs / "data" / "bad_ips.csv").write_text(BAD_IPS)
    single.write(fanned("domain: acme"))
    assert "By domain" not in render_text((await single.plan()).plan)


async def test_a_domain_with_its_own_url_is_read_and_written_there_only(tmp_path: Path) -> None:
    """globex lives in another region: its requests (reads, writes, job polls) go to that
    endpoint with its own token; the other domains stay on the run's endpoint."""
    from tests.support import make_app

    p, recording = authorised_project(tmp_path, fanned())
    eu = make_app(
        EmulatorConfig(
            create_latency=0.0,
            deploy_latency=0.02,
            grants=[Grant(token="tok-globex-2", domains=["globex"])],
        ),
        clock=p.clock,
    )
    eu_recording = Recording(eu)
    p.write(
        AUTH_DOMAINS.replace(
            "spec: {auth: {tokenEnv: GLOBEX_TOKEN}, wave: 1}",
            "spec: {auth: {tokenEnv: GLOBEX_TOKEN}, wave: 1, url: 'https://eu.test/lookup-api'}",
        ),
        fanned(),
    )
    env = {**SECRETS, **TOKENS}
    assert (
        await p.apply(env=env, endpoint_transports={"https://eu.test/lookup-api": eu_recording})
        == 0
    )
    assert {domain_of(path, "/lookup-api") for path, _ in eu_recording.seen} == {"globex"}
    assert "globex" not in {domain_of(path, "/lookup-api") for path, _ in recording.seen}
    assert all(header == "Bearer tok-globex-2" for _, header in eu_recording.seen)
    assert len(eu.emulator.store.rows_of("globex", "bad_ips")) == 3
    assert not p.emulator.store.rows_of("globex", "bad_ips")
    async with LookupReader(
        p.settings, transport=recording, transports={"https://eu.test/lookup-api": eu_recording}
    ) as reader:
        run = await make_plan(reader, [str(p.specs)], p.settings.state_path, env=env)
    assert not run.plan.can_apply()


async def test_a_domain_gives_url_or_region_not_both(tmp_path: Path) -> None:
    p = project(tmp_path, fanned())
    p.write(
        DOMAINS.replace(
            "labels: {tier: silver}}",
            "labels: {tier: silver}}\nspec: {url: 'https://x', region: eu}",
        ),
        fanned(),
    )
    assert any("give 'url' or 'region', not both" in line for line in errors(p)), errors(p)


def test_the_domain_of_a_request_is_read_after_the_endpoint_path() -> None:
    """An endpoint whose own path holds 'lookup' cannot make another segment the domain."""
    assert domain_of("/lookup-api/lookup/globex/bad_ips/job/7", "/lookup-api") == "globex"
    assert domain_of("/lookup/api/lookup/acme", "/lookup/api") == "acme"
    assert domain_of("/lookup/api/lookup/acme%2Fx", "/lookup/api") == "acme/x"
    assert domain_of("/lookup/api/other", "/lookup/api") is None
    assert domain_of("/elsewhere/lookup/acme", "/lookup/api") is None


async def test_patch_rows_outside_the_repository_need_allow_outside(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("ip,reason\n203.0.113.5,x\n")
    p = project(tmp_path / "repo", fanned(), overlay(f"  csv:\n    patch: {{add: {outside}}}"))
    assert any(
        "spec.csv.patch.add: the CSV" in e and "outside the spec repository" in e for e in errors(p)
    )
    assert not validate_paths([str(p.specs)], allow_outside=True).errors
