"""The pipeline, one step per function: specs → desired state; live state; state file → plan.

Reading live state is its own step (``fetch_live``: one paged list call per domain, never a GET per
lookup); building the plan stays pure (``plan.builder``). ``PlanRun`` carries everything a command
needs afterwards (apply, drift, the saved plan file).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.client import LookupMeta, LookupReader
from reconciler.desired import DesiredLookup, desired_lookup
from reconciler.errors import Diagnostic, NotFoundError, SpecError
from reconciler.plan.builder import DomainPolicy, Selector, build_plan, live_fields, live_flat
from reconciler.plan.model import Plan
from reconciler.spec import validate_paths
from reconciler.state import State


@dataclass
class Workspace:
    """Valid specs, expanded: desired lookups, domain policies, and the warnings validation gave."""

    desired: list[DesiredLookup]
    policies: dict[str, DomainPolicy]
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def domains(self) -> list[str]:
        """Every domain the specs name, sorted."""
        names = {d.domain for d in self.desired} | set(self.policies)
        return sorted(names)

    def by_address(self) -> dict[str, DesiredLookup]:
        """Desired lookups by ``domain/name``."""
        return {d.address: d for d in self.desired}


def load_workspace(paths: list[str]) -> Workspace:
    """Load and validate specs; raise SpecError (with every diagnostic) when any is invalid."""
    result = validate_paths(paths)
    if result.errors:
        raise SpecError(result.diagnostics)
    desired = [desired_lookup(lookup, result.csv_scans) for lookup in result.lookups]
    policies = {
        d.model.metadata.name: DomainPolicy(
            d.model.metadata.name, d.model.spec.prune, tuple(d.model.spec.keep)
        )
        for d in result.domains
    }
    return Workspace(desired, policies, [d for d in result.diagnostics if d.severity == "warning"])


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


def fingerprint(meta: LookupMeta | None) -> str:
    """A digest of what a plan read about one live lookup ("absent" when there was none)."""
    if meta is None:
        return "absent"
    data = {"config": live_flat(meta), "fields": live_fields(meta)}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


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


async def make_plan(
    reader: LookupReader,
    paths: list[str],
    state_path: Path,
    selector: Selector | None = None,
    *,
    strict_protect: bool = True,
) -> PlanRun:
    """Load specs, read live state and the state file, and build the plan."""
    workspace = load_workspace(paths)
    state = State.load(state_path)
    live = await fetch_live(reader, workspace.domains)
    plan = build_plan(
        workspace.desired,
        live,
        state.lookups,
        workspace.policies,
        selector,
        strict_protect=strict_protect,
    )
    if any(change.csv is not None for change in plan.changes):
        from reconciler import csvdiff

        sources = {d.address: (d.csv.path, d.csv.spec) for d in workspace.desired if d.csv}
        recorded = {a: s.csv for a, s in state.lookups.items() if s.csv}
        plan = csvdiff.enrich(plan, sources, recorded)
    return PlanRun(plan, workspace, live, state)


# --- saved plans -------------------------------------------------------------------------------

PLAN_FILE_KIND = "reconciler-plan"


def saved_plan(run: PlanRun, paths: list[str]) -> dict[str, Any]:
    """The ``plan --out`` document: the plan JSON plus what apply needs (no secret values)."""
    live = run.live_by_address()
    desired = run.workspace.by_address()
    entries = []
    for change in run.plan.actionable:
        want = desired.get(change.address)
        entries.append(
            {
                "address": change.address,
                "action": change.action.value,
                "live_fingerprint": fingerprint(live.get(change.address)),
                "spec_hash": want.spec_hash if want else None,
                "csv_sha256": want.csv.sha256 if want and want.csv else None,
            }
        )
    document = run.plan.to_json()
    document["apply"] = {"kind": PLAN_FILE_KIND, "paths": paths, "changes": entries}
    return document
