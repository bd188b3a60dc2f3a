"""The pipeline, one step per function: specs → desired state; live state; state file → plan.

Reading live state is its own step (``fetch_live``: one paged list call per domain, never a GET per
lookup); building the plan stays pure (``plan.builder``). ``PlanRun`` carries everything a command
needs afterwards (apply, drift, the saved plan file).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reconciler import gitrepo
from reconciler.client import LookupMeta, LookupReader, job_outcome
from reconciler.desired import DesiredLookup, desired_lookup, placeholders
from reconciler.errors import (
    Diagnostic,
    NotFoundError,
    PlanError,
    PreflightError,
    ReconcilerError,
    SettingsError,
    SpecError,
)
from reconciler.plan.builder import Selector, build_plan
from reconciler.plan.guards import DomainPolicy, Guards
from reconciler.plan.model import Plan
from reconciler.plan.references import annotate, breaking
from reconciler.settings import Credentials, named_credentials, region_url
from reconciler.spec import validate_paths
from reconciler.spec.csvcheck import ScanProgress
from reconciler.spec.model import DomainAuth
from reconciler.spec.references import ReferenceGraph
from reconciler.state import SUBMITTED, State, secrets_rotated
from reconciler.state.snapshots import Snapshots


@dataclass
class Workspace:
    """Valid specs, expanded: desired lookups, domain policies, and the warnings validation gave."""

    desired: list[DesiredLookup]
    policies: dict[str, DomainPolicy]
    warnings: list[Diagnostic] = field(default_factory=list)
    auth: dict[str, DomainAuth] = field(default_factory=dict)  # domains with their own credential
    waves: dict[str, int] = field(default_factory=dict)  # domain → its apply wave
    endpoints: dict[str, str] = field(default_factory=dict)  # domains with their own endpoint
    folder: Path = field(default_factory=Path.cwd)  # where the specs are: git is asked there
    references: ReferenceGraph = field(default_factory=ReferenceGraph)  # who uses which lookup

    def credentials(self, env: Mapping[str, str]) -> dict[str, Credentials]:
        """Each Domain's own credential, read from the variables it names (an error if unset)."""
        return {
            domain: named_credentials(
                auth.tokenEnv, auth.apiKeyEnv, auth.apiSecretEnv, env, f"domain {domain}"
            )
            for domain, auth in sorted(self.auth.items())
        }

    @property
    def domains(self) -> list[str]:
        """Every domain the specs name, sorted."""
        names = {d.domain for d in self.desired} | set(self.policies)
        return sorted(names)

    def by_address(self) -> dict[str, DesiredLookup]:
        """Desired lookups by ``domain/name``."""
        return {d.address: d for d in self.desired}


def load_workspace(
    paths: list[str],
    *,
    allow_outside: bool = False,
    progress: ScanProgress | None = None,
    ignore_references: Sequence[str] = (),
) -> Workspace:
    """Load and validate specs; raise SpecError (with every diagnostic) when any is invalid."""
    result = validate_paths(
        paths,
        allow_outside=allow_outside,
        progress=progress,
        ignore_references=ignore_references,
    )
    if result.errors:
        raise SpecError(result.diagnostics)
    desired = [desired_lookup(lookup, result.csv_scans) for lookup in result.lookups]
    policies = {
        d.model.metadata.name: DomainPolicy(
            d.model.metadata.name,
            d.model.spec.prune,
            tuple(d.model.spec.keep),
            d.model.spec.maxDestroy,
        )
        for d in result.domains
    }
    return Workspace(
        desired,
        policies,
        [d for d in result.diagnostics if d.severity == "warning"],
        auth={
            d.model.metadata.name: d.model.spec.auth for d in result.domains if d.model.spec.auth
        },
        waves={d.model.metadata.name: d.model.spec.wave for d in result.domains},
        endpoints={
            d.model.metadata.name: (
                d.model.spec.url or region_url(d.model.spec.region or "")
            ).rstrip("/")
            for d in result.domains
            if d.model.spec.url or d.model.spec.region
        },
        folder=gitrepo.folder_of(paths),
        references=result.references,
    )


async def preflight(reader: LookupReader, plan: Plan) -> None:
    """Before the first write: every domain the plan touches answers an authorised list call
    with the credential its requests will carry. If one does not, nothing is sent anywhere."""
    domains = sorted({c.domain for c in plan.actionable if c.request})

    async def one(domain: str) -> None:
        try:
            async for _ in reader.list_lookups(domain, page_size=1):
                break
        except ReconcilerError as exc:
            raise PreflightError(
                f"domain {domain} did not answer an authorised list call ({exc.message}); "
                "nothing was sent to any domain",
                hint=f"check the credential and endpoint of {domain} (its Domain's auth, or the "
                "run's DEVO_TOKEN / DEVO_API_KEY)",
            ) from None

    await asyncio.gather(*(one(d) for d in domains))


async def fetch_live(reader: LookupReader, domains: list[str]) -> dict[str, list[LookupMeta]]:
    """Every live lookup of each domain, read with the paged list call, domains concurrently."""

    async def one(domain: str) -> list[LookupMeta]:
        try:
            return await reader.all_lookups(domain)
        except NotFoundError as exc:
            if exc.missing == "domain":
                exc.hint = (
                    f"domain {domain!r} is named by the specs but the service does not know it"
                )
            raise

    lists = await asyncio.gather(*(one(d) for d in domains))
    return dict(zip(domains, lists, strict=True))


@dataclass
class PlanRun:
    """A plan together with what it was built from."""

    plan: Plan
    workspace: Workspace
    live: dict[str, list[LookupMeta]]
    state: State

    def live_by_address(self) -> dict[str, LookupMeta]:
        """Live lookups by ``domain/name``."""
        return {f"{d}/{m.name}": m for d, metas in self.live.items() for m in metas}


def rotated_secrets(desired: list[DesiredLookup], state: State, env: Mapping[str, str]) -> set[str]:
    """Addresses whose S3 secrets in the environment differ from the digest of the ones last sent.

    Only lookups whose every secret variable is set can be checked; the values are hashed with the
    record's salt and never kept.
    """
    rotated = set()
    for want in desired:
        record = state.lookups.get(want.address)
        names = placeholders(want.body)
        if record is None or not record.secrets or not names:
            continue
        values = [env.get(name, "") for name in names]
        if all(values) and secrets_rotated(record.secrets, values):
            rotated.add(want.address)
    return rotated


def unset_secrets(plan: Plan, workspace: Workspace, env: Mapping[str, str]) -> list[str]:
    """Warnings for ``${env:...}`` secrets that changes to be sent need and that are not set.

    ``apply`` refuses to send anything without them; the plan says so first.
    """
    desired = workspace.by_address()
    missing: dict[str, list[str]] = {}
    for change in plan.actionable:
        want = desired.get(change.address)
        if want is None or not change.request or change.action.value == "delete":
            continue
        for name in placeholders(want.body):
            if not env.get(name):
                missing.setdefault(name, []).append(change.address)
    return [
        f"environment variable {name} is not set (needed by {', '.join(sorted(set(addresses)))}); "
        "apply will refuse until it is"
        for name, addresses in sorted(missing.items())
    ]


async def check_submitted(
    reader: LookupReader, state: State, addresses: set[str]
) -> tuple[dict[str, str], list[str]]:
    """Jobs the last apply did not see end (``--no-wait``, or a run killed or timed out while
    they ran): ({address: failure message}, warnings).

    A record whose job failed, or whose job is not found, cannot be trusted (the plan re-sends
    it); one whose job still runs gives a warning; one whose job ended well is trusted.
    """
    failed: dict[str, str] = {}
    warnings: list[str] = []
    pending = [
        (a, r)
        for a, r in sorted(state.lookups.items())
        if r.status == SUBMITTED and r.job_id and a in addresses
    ]

    async def one(address: str, job_id: str) -> None:
        domain, name = address.split("/", 1)
        try:
            statuses = await reader.job_statuses(domain, name, job_id)
        except NotFoundError:
            # Gone with its lookup, or purged: nothing proves it ended well, so the record is
            # not trusted (the plan sends the lookup again, never "No changes").
            failed[address] = f"{job_id}: not found, so it cannot be shown to have ended well"
            return
        outcome = job_outcome(statuses)
        if outcome == "failed":
            error = next(s for s in statuses if s.code.endswith(".err"))
            failed[address] = f"{job_id}: {error.code}: {error.msg or 'no message'}"
        elif outcome in ("running", "settling"):
            warnings.append(
                f"{address}: job {job_id} of the last apply has not ended yet "
                f"(latest status: {statuses[-1].code if statuses else 'none'})"
            )

    await asyncio.gather(*(one(a, r.job_id or "") for a, r in pending))
    return failed, warnings


def with_waves(plan: Plan, waves: Mapping[str, int]) -> Plan:
    """Each change with its domain's apply wave (shown by the views, ``wave`` in the JSON)."""
    if not any(waves.values()):
        return plan
    changes = tuple(c.model_copy(update={"wave": waves.get(c.domain, 0)}) for c in plan.changes)
    return plan.model_copy(update={"changes": changes})


async def make_plan(
    reader: LookupReader,
    paths: list[str],
    state_path: str | Path,
    selector: Selector | None = None,
    *,
    strict_protect: bool = True,
    replace: Collection[str] = (),
    env: Mapping[str, str] | None = None,
    allow_outside: bool = False,
    guards: Guards | None = None,
    progress: ScanProgress | None = None,
) -> PlanRun:
    """Load specs, read live state and the state file, and build the plan.

    ``replace``: addresses to re-send even when they are up to date (``apply --replace``).
    ``env``: where ``${env:...}`` secrets are read to see a rotation (default: the process's).
    """
    guards = guards or Guards()
    workspace = load_workspace(
        paths,
        allow_outside=allow_outside,
        progress=progress,
        ignore_references=guards.ignore_references,
    )
    reader.use_domain_credentials(workspace.credentials(os.environ if env is None else env))
    reader.use_domain_endpoints(workspace.endpoints)
    state = State.load(state_path)
    known = {d.address for d in workspace.desired}
    unknown = sorted(set(replace) - known)
    if unknown:
        raise SettingsError(
            f"--replace names no lookup of the specs: {', '.join(unknown)}",
            hint="use the DOMAIN/NAME address a plan shows",
        )
    live = await fetch_live(reader, workspace.domains)
    failed_jobs, job_warnings = await check_submitted(reader, state, known)
    plan = build_plan(
        workspace.desired,
        live,
        state.lookups,
        workspace.policies,
        selector,
        strict_protect=strict_protect,
        rotated=rotated_secrets(workspace.desired, state, os.environ if env is None else env),
        replace=replace,
        failed_jobs=failed_jobs,
        guards=guards,
    )
    plan = with_waves(plan, workspace.waves)
    plan = annotate(plan, workspace.references)
    broken = breaking(plan, workspace.references, guards.allow_breaking)
    if broken and strict_protect:
        raise PlanError(
            "\n".join(broken) + "\nnothing was sent",
            hint="change or remove those queries in the same change, or pass --allow-breaking "
            "ADDRESS if breaking them is meant",
        )
    job_warnings += broken
    job_warnings += unset_secrets(plan, workspace, os.environ if env is None else env)
    if job_warnings:
        plan = plan.model_copy(update={"warnings": (*plan.warnings, *job_warnings)})
    if any(change.csv is not None for change in plan.changes):
        from reconciler.plan import rows as row_diff

        sources = {d.address: d.csv for d in workspace.desired if d.csv}
        recorded = {a: s.csv for a, s in state.lookups.items() if s.csv}
        live_rows = {f"{d}/{m.name}": m.numEntries for d, metas in live.items() for m in metas}
        plan = row_diff.enrich(
            plan, sources, recorded, live_rows, Snapshots(state.location, state.backend)
        )
    return PlanRun(plan, workspace, live, state)
