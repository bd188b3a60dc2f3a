"""The pipeline, one step per function: specs → desired state; live state; state file → plan.

Reading live state is its own step (``fetch_live``: one paged list call per domain, never a GET per
lookup); building the plan stays pure (``plan.builder``). ``PlanRun`` carries everything a command
needs afterwards (apply, drift, the saved plan file).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from reconciler.heap import collector_paused
from reconciler.plan.builder import Selector, build_plan
from reconciler.plan.checks import check_context, last_code, run_checks, wants_status
from reconciler.plan.guards import DomainPolicy, Guards
from reconciler.plan.model import CheckResult, Plan
from reconciler.plan.policies import Subject, domains_facts, evaluate, unknown_overrides
from reconciler.plan.references import annotate, breaking
from reconciler.settings import Credentials, named_credentials, region_url
from reconciler.spec import LoadResult, validate_paths
from reconciler.spec.csvcheck import ScanProgress
from reconciler.spec.model import DomainAuth
from reconciler.spec.policies import Expression, Policy
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
    compiled_policies: list[Policy] = field(default_factory=list)  # kind: Policy, compiled
    checks: dict[str, list[Expression]] = field(default_factory=dict)  # address → its checks
    domain_facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # `domain` in rules
    lookup_domains: frozenset[str] = frozenset()  # the domains of the specs' lookups

    def subjects(self) -> dict[str, Subject]:
        """What a policy rule may know of each lookup besides its change."""
        return {d.address: Subject.of(d) for d in self.desired}

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
        """Every domain the specs name, sorted (known before the desired lookups are worked out:
        a plan's list calls go out meanwhile)."""
        return sorted(self.lookup_domains | set(self.policies))

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
    result = validated_specs(
        paths,
        allow_outside=allow_outside,
        progress=progress,
        ignore_references=ignore_references,
    )
    return workspace_of(
        result, paths, [desired_lookup(lookup, result.csv_scans) for lookup in result.lookups]
    )


def validated_specs(
    paths: list[str],
    *,
    allow_outside: bool = False,
    progress: ScanProgress | None = None,
    ignore_references: Sequence[str] = (),
) -> LoadResult:
    """Every spec under ``paths`` loaded and checked; SpecError (every diagnostic) if any is
    invalid."""
    result = validate_paths(
        paths,
        allow_outside=allow_outside,
        progress=progress,
        ignore_references=ignore_references,
    )
    if result.errors:
        raise SpecError(result.diagnostics)
    return result


def workspace_of(result: LoadResult, paths: list[str], desired: list[DesiredLookup]) -> Workspace:
    """The Workspace of valid specs, with ``desired`` (their lookups' DesiredLookups, or a list
    the caller fills)."""
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
        compiled_policies=result.compiled_policies,
        checks=result.checks,
        domain_facts=domains_facts(result.domains),
        lookup_domains=frozenset(lookup.model.metadata.domain for lookup in result.lookups),
    )


async def evaluate_checks(
    reader: LookupReader,
    workspace: Workspace,
    live: Mapping[str, list[LookupMeta]],
    state: State,
    addresses: Collection[str] | None = None,
    *,
    missing_fails: bool = False,
) -> list[CheckResult]:
    """The checks of every live lookup (of ``addresses``): read from the list call the plan
    already made, plus, when a check reads ``status`` and the service reports no ``lastStatus``,
    the lookup's last job. A lookup that is not live fails its checks only with
    ``missing_fails`` (``reconciler check``); a plan shows its create instead."""
    metas = {f"{domain}/{m.name}": m for domain, found in live.items() for m in found}
    wanted = workspace.by_address()
    gate = asyncio.Semaphore(8)

    async def one(address: str, expressions: list[Expression]) -> list[CheckResult]:
        desired = wanted[address]
        meta = metas.get(address)
        if meta is None:
            if not missing_fails:
                return []
            return [
                CheckResult(
                    address=address,
                    expr=e.source,
                    where=e.where,
                    passed=False,
                    error="the lookup does not exist",
                )
                for e in expressions
            ]
        code = last_code(meta)
        if code is None and wants_status(expressions):
            async with gate:
                code = await _last_job_code(reader, desired.domain, desired.name)
        variables = check_context(meta, desired, state.lookups.get(address), code)
        return run_checks(expressions, address, variables)

    chosen = sorted(
        (a, e) for a, e in workspace.checks.items() if addresses is None or a in addresses
    )
    found = await asyncio.gather(*(one(a, e) for a, e in chosen))
    return [result for results in found for result in results]


async def _last_job_code(reader: LookupReader, domain: str, name: str) -> str | None:
    """The latest status code of a lookup's last job (None when it cannot be read)."""
    try:
        ids = await reader.job_ids(domain, name)
        statuses = await reader.job_statuses(domain, name, ids[-1]) if ids else []
    except ReconcilerError:
        return None
    return statuses[-1].code if statuses else None


def judge(plan: Plan, workspace: Workspace, guards: Guards) -> Plan:
    """The plan with its policy violations (``--override-policy`` must name a Policy)."""
    unknown = unknown_overrides(workspace.compiled_policies, guards.override_policies)
    if unknown:
        raise SettingsError(
            f"--override-policy names no Policy of the specs: {', '.join(unknown)}",
            hint="use a Policy's metadata.name",
        )
    return evaluate(
        plan,
        workspace.compiled_policies,
        workspace.subjects(),
        workspace.domain_facts,
        guards.override_policies,
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
            ) from exc

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
        if record is None or not record.secrets:
            continue  # nothing to compare with (most lookups: only S3 sources have secrets)
        names = placeholders(want.body)
        if not names:
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
    with collector_paused():  # see reconciler.heap: a big plan spent 40% of its time there
        guards = guards or Guards()
        environ = os.environ if env is None else env
        result = validated_specs(
            paths,
            allow_outside=allow_outside,
            progress=progress,
            ignore_references=guards.ignore_references,
        )
        workspace = workspace_of(result, paths, [])
        reader.use_domain_credentials(workspace.credentials(environ))
        reader.use_domain_endpoints(workspace.endpoints)
        state = State.load(state_path)
        known = {lookup.model.address for lookup in result.lookups}
        unknown = sorted(set(replace) - known)
        if unknown:
            raise SettingsError(
                f"--replace names no lookup of the specs: {', '.join(unknown)}",
                hint="use the DOMAIN/NAME address a plan shows",
            )
        # Everything is checked; only now is anything sent. The list calls go out first and the
        # desired lookups are worked out while their answers are on the way.
        live = await _meanwhile(
            fetch_live(reader, workspace.domains), _expand(result, workspace.desired)
        )
        failed_jobs, job_warnings = await check_submitted(reader, state, known)
        plan = build_plan(
            workspace.desired,
            live,
            state.lookups,
            workspace.policies,
            selector,
            strict_protect=strict_protect,
            rotated=rotated_secrets(workspace.desired, state, environ),
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
        plan = judge(plan, workspace, guards)
        if workspace.checks:
            shown = {c.address for c in plan.changes}
            results = await evaluate_checks(reader, workspace, live, state, shown)
            plan = plan.model_copy(update={"checks": tuple(results)})
        job_warnings += unset_secrets(plan, workspace, environ)
        if job_warnings:
            plan = plan.model_copy(update={"warnings": (*plan.warnings, *job_warnings)})
        plan = with_row_detail(plan, workspace, live, state)
        return PlanRun(plan, workspace, live, state)


async def _expand(result: LoadResult, into: list[DesiredLookup]) -> None:
    """Each valid lookup's DesiredLookup into ``into``, giving the event loop a turn every 256
    lookups: list calls in flight meanwhile are read as their answers arrive."""
    for count, lookup in enumerate(result.lookups, 1):
        into.append(desired_lookup(lookup, result.csv_scans))
        if count % 256 == 0:
            await asyncio.sleep(0)


async def _meanwhile(
    reading: Coroutine[Any, Any, dict[str, list[LookupMeta]]], work: Coroutine[Any, Any, None]
) -> dict[str, list[LookupMeta]]:
    """``reading``'s answer, with ``work`` done while it runs.

    A plan's list calls mostly wait on the service (a 10,000-lookup plan's took 0.26 s, 0.15 s of
    it this process's); the local work in between fills that wait. A failure of the work is
    raised as it happens, one of the reading once the work is done; the reading is never left
    running (or failed unheard) behind it."""
    task = asyncio.ensure_future(reading)
    try:
        await work
        return await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        elif not task.cancelled():
            task.exception()  # retrieved: a failure raised above is not logged again at exit


def with_row_detail(
    plan: Plan, workspace: Workspace, live: Mapping[str, Sequence[LookupMeta]], state: State
) -> Plan:
    """The plan with each CSV change's rows diffed by key and its upload strategy (a delta or
    the whole file): what a fresh plan shows and what applying a saved plan sends."""
    if not any(change.csv is not None for change in plan.changes):
        return plan
    from reconciler.plan import rows as row_diff

    sources = {d.address: d.csv for d in workspace.desired if d.csv}
    recorded = {a: s.csv for a, s in state.lookups.items() if s.csv}
    live_rows = {f"{d}/{m.name}": m.numEntries for d, metas in live.items() for m in metas}
    return row_diff.enrich(
        plan, sources, recorded, live_rows, Snapshots(state.location, state.backend)
    )
