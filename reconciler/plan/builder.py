"""Build a plan: a pure function of desired state, live state and the state file.

No HTTP, no clock, no printing. The rules, per lookup:

* a spec with ``state: present`` and no live lookup → **create**;
* a live lookup whose canonical config differs from the desired one → **update**, with one
  ``AttributeChange`` per differing path. A path the service does not report is *unverified*: the
  state file (what apply last deployed) stands in for it when it has the path, otherwise the path is
  listed in ``unverified`` and is not a change. With ``deployConfig: null`` the observable
  ``fields`` (columns, types, key flags) and ``shared`` are compared instead;
* a ``csv.file`` lookup whose CSV content changed (sha256 against the state file, else the row count
  against ``numEntries``) → **update**;
* ``state: absent``, or ``Domain.prune`` for live lookups no spec names (minus ``keep`` globs)
  → **delete**; a delete of a lookup whose spec (or last apply) says ``protect: true`` is an error;
* live lookups that no spec names and no prune touches are **unmanaged**.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from reconciler.canonical import SERVER_OWNED, flatten
from reconciler.client import LookupMeta
from reconciler.coltypes import field_type_name
from reconciler.desired import DesiredLookup
from reconciler.errors import PlanError
from reconciler.plan.details import describe
from reconciler.plan.guards import (
    DomainPolicy,
    Guards,
    blast_radius,
    prune_without_state,
    suspicious_deletes,
)
from reconciler.plan.model import Action, AttributeChange, Change, ChangeSource, CsvChange, Plan
from reconciler.state import LookupState, Observed


@dataclass(frozen=True)
class Selector:
    """``--target``/``--exclude`` globs on ``domain/name``."""

    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def unmatched(self, addresses: Iterable[str]) -> list[str]:
        """A warning for each ``--target``/``--exclude`` glob that matches none of ``addresses``."""
        known = list(addresses)
        return [
            f"{flag} {glob!r} matches no lookup (addresses are DOMAIN/NAME, e.g. acme/geo_*)"
            for flag, globs in (("--target", self.targets), ("--exclude", self.excludes))
            for glob in globs
            if not any(fnmatch.fnmatchcase(address, glob) for address in known)
        ]

    def selects(self, address: str) -> bool:
        """True when the address is targeted (or no target is given) and not excluded."""
        if self.targets and not any(fnmatch.fnmatchcase(address, t) for t in self.targets):
            return False
        return not any(fnmatch.fnmatchcase(address, e) for e in self.excludes)


@dataclass
class Comparison:
    """The outcome of comparing one desired lookup with its live counterpart."""

    diff: list[AttributeChange] = field(default_factory=list)
    unverified: list[str] = field(default_factory=list)
    csv: CsvChange | None = None
    live: dict[str, Any] = field(default_factory=dict)  # the live config's canonical form

    def add(self, path: str, before: Any, after: Any, source: ChangeSource) -> None:
        """One differing attribute, with element-level details for nested values."""
        self.diff.append(
            AttributeChange(
                path=path,
                before=before,
                after=after,
                source=source,
                details=describe(path, before, after),
            )
        )

    @property
    def paths(self) -> set[str]:
        """The paths already found to differ."""
        return {d.path for d in self.diff}


def live_flat(meta: LookupMeta, shown: dict[str, Any] | None = None) -> dict[str, Any]:
    """The canonical config of a live lookup; ``shared`` stands in when ``deployConfig`` is null.

    ``shown``: ``flatten(meta.deployConfig)`` when the caller has it already.
    """
    flat = dict(flatten(meta.deployConfig) if shown is None else shown)
    if "visibility" not in flat and meta.visibility is not None:
        flat["visibility"] = meta.visibility
    return flat


def live_fields(meta: LookupMeta) -> list[tuple[str, str, bool]]:
    """The observable columns of a live lookup: (name, lower-case type, key flag)."""
    return [(f.column, field_type_name(f.type), f.key) for f in meta.fields]


def observed_facts(meta: LookupMeta) -> Observed:
    """What a plan can always see of a lookup, config or not: fields, numEntries, shared."""
    return Observed(
        fields=[list(f) for f in live_fields(meta)] if meta.fields else None,
        numEntries=meta.numEntries,
        shared=meta.shared,
    )


def _differing(a: Mapping[str, Any], b: Mapping[str, Any], skip: Set[str]) -> list[str]:
    """Paths either side has whose values differ (a missing path reads as null), sorted.

    Asked twice per lookup of a plan, almost always of two configs that agree: only what differs
    is sorted, not every path of both."""
    found = [p for p, value in a.items() if p not in skip and value != b.get(p)]
    found.extend(p for p, value in b.items() if p not in a and p not in skip and value is not None)
    found.sort()
    return found


def compare(
    desired: DesiredLookup,
    meta: LookupMeta,
    previous: LookupState | None,
    *,
    rotated: bool = False,
) -> Comparison:
    """Three-way comparison of a desired lookup, a live one and the record of the last apply.

    With a record (what was sent, and what the service showed for it), a path is in sync when the
    spec still equals what was sent *and* live still equals what was shown: a spec edit is a change
    from the spec side, a live edit is drift, whatever the service does to the text it echoes.
    Without a record the normalised configs are compared both ways. Observable facts (``fields``,
    ``numEntries``, ``shared``) always count; the record only stands in for what the service does
    not report at all.
    """
    result = Comparison()
    shown = flatten(meta.deployConfig)
    reports = bool(shown)  # the service shows a deployConfig (not null, not empty)
    live = result.live = live_flat(meta, shown)
    skip = desired.ignore | SERVER_OWNED
    wanted = desired.canonical
    record = previous if previous is not None and previous.canonical else None
    if record is not None:
        if record.endpoint and desired.endpoint and record.endpoint != desired.endpoint:
            result.add("endpoint", record.endpoint, desired.endpoint, "spec")
        for path in _differing(record.canonical, wanted, skip):
            result.add(path, record.canonical.get(path), wanted.get(path), "spec")
        if rotated:
            result.add("recipe.source.fileProvider.secrets", "(as sent)", "(rotated)", "spec")
        baseline = record.echoed if record.echoed and reports else None
        if baseline is not None:
            for path in _differing(baseline, live, skip | result.paths):
                if path in live:  # a path the listing does not show at all is not a change
                    result.add(path, live.get(path), wanted.get(path), "live")
        elif reports:
            _compare_normalised(result, wanted, live, skip | result.paths)
        elif "visibility" not in result.paths and live.get("visibility") not in (
            None,
            wanted.get("visibility"),
        ):
            result.add("visibility", live["visibility"], wanted.get("visibility"), "live")
    elif reports:
        _compare_normalised(result, wanted, live, skip)
    else:
        for path in sorted(wanted):
            if path in skip:
                continue
            if path in live:
                if live[path] != wanted[path]:
                    result.add(path, live[path], wanted[path], "live")
            else:
                result.unverified.append(path)
    _compare_observed(result, desired, meta, record, reports)
    if desired.csv is not None:
        result.csv = _csv_change(desired, meta, record, result)
    return result


def _compare_normalised(
    result: Comparison, wanted: Mapping[str, Any], live: Mapping[str, Any], skip: Set[str]
) -> None:
    """Both directions: differing values, and paths only live has (shown as removed).

    A path the spec has and the live config does not show at all (not even as null) is one the
    service does not report: unverified, not a change. Devo shows nulls for what does not apply,
    so a missing key means a service that does not know the field (``windowMillis``, say).
    """
    for path in _differing(wanted, live, skip):
        if path in wanted and path not in live:
            result.unverified.append(path)
        else:
            result.add(path, live.get(path), wanted.get(path), "live")


def _compare_observed(
    result: Comparison,
    desired: DesiredLookup,
    meta: LookupMeta,
    record: LookupState | None,
    reports: bool,
) -> None:
    """The facts a service shows even without ``deployConfig``: columns and the row count."""
    observed = live_fields(meta)
    recorded = record.observed.fields if record is not None else None
    if recorded is not None and meta.fields:
        now = [list(f) for f in observed]
        if now != recorded and "fields" not in result.paths:
            result.add("fields", now, recorded, "live")
    elif not reports and desired.fields is not None and meta.fields:
        wanted_fields = desired.fields
        if not any(flag for _, _, flag in observed):
            # A service that marks no key column says nothing about the key: compare the rest.
            observed = [(n, t, False) for n, t, _ in observed]
            wanted_fields = [(n, t, False) for n, t, _ in wanted_fields]
        if observed != wanted_fields:
            result.add(
                "fields", [list(f) for f in observed], [list(f) for f in wanted_fields], "live"
            )
    elif not reports and desired.query_columns is not None and meta.fields:
        # Blind otherwise: the names of a query's columns are all a plan can see of it. Compared
        # as sets, since services order and type a query's columns in their own ways.
        names = sorted({name for name, _, _ in observed})
        wanted_names = sorted(set(desired.query_columns))
        if names != wanted_names:
            result.add("fields", names, wanted_names, "live")
    # The rows of an S3 CSV are the bucket's; a count that moved since apply was redeployed.
    if record is not None and desired.csv is None and desired.kind == "csv":
        rows = record.observed.numEntries
        if rows is not None and meta.numEntries is not None and rows != meta.numEntries:
            result.add("numEntries", meta.numEntries, rows, "live")


def _csv_change(
    desired: DesiredLookup, meta: LookupMeta, record: LookupState | None, result: Comparison
) -> CsvChange | None:
    if not (desired.csv is not None):
        raise RuntimeError("invariant broken: desired.csv is not None")
    known = record.csv if record is not None else None
    if known is not None and known.sha256:
        if known.sha256 != desired.csv.sha256:
            return CsvChange(
                before_sha256=known.sha256,
                after_sha256=desired.csv.sha256,
                before_rows=known.rows,
                after_rows=desired.csv.rows,
            )
        # The file is what was uploaded; the data in Devo must still be what it gave.
        if meta.numEntries is not None and meta.numEntries != desired.csv.rows:
            return CsvChange(
                before_sha256=known.sha256,
                after_sha256=desired.csv.sha256,
                before_rows=meta.numEntries,
                after_rows=desired.csv.rows,
                source="live",
            )
        return None
    if meta.numEntries is not None and meta.numEntries != desired.csv.rows:
        return CsvChange(
            after_sha256=desired.csv.sha256,
            before_rows=meta.numEntries,
            after_rows=desired.csv.rows,
            source="live",
        )
    # No record of what was uploaded (an apply killed while its job ran, a lost state, a lookup
    # made by hand): the rows in Devo cannot be proven to be the file's, and an equal row count
    # proves nothing. Such a lookup is a change, never "No changes": the file is sent.
    return CsvChange(
        after_sha256=desired.csv.sha256,
        before_rows=meta.numEntries,
        after_rows=desired.csv.rows,
        source="unproven",
    )


def build_plan(
    desired: Iterable[DesiredLookup],
    live: Mapping[str, list[LookupMeta]],
    state: Mapping[str, LookupState],
    policies: Mapping[str, DomainPolicy] | None = None,
    selector: Selector | None = None,
    *,
    strict_protect: bool = True,
    rotated: Collection[str] = (),
    replace: Collection[str] = (),
    failed_jobs: Mapping[str, str] | None = None,
    guards: Guards | None = None,
) -> Plan:
    """The plan that takes ``live`` to ``desired``.

    ``rotated``: addresses whose S3 secrets differ from the ones last sent (seen by the caller from
    the environment and the recorded digest). ``replace``: addresses to re-send even when nothing
    differs (``apply --replace``). ``failed_jobs``: addresses whose last apply was not followed
    (``--no-wait``) and whose job then failed, with its message: the record cannot be trusted.

    A delete of a protected lookup raises PlanError, or with ``strict_protect=False`` (drift, which
    only reports) stays in the plan with a warning. So do the deletes ``guards`` refuse (see
    ``Guards``). A delete is protected when the spec *or the record of the last apply* says
    ``protect: true``: lifting protection takes an apply of its own.
    """
    guards = guards or Guards()
    policies = policies or {}
    selector = selector or Selector()
    failed_jobs = failed_jobs or {}
    live_by_address = {
        f"{domain}/{meta.name}": meta for domain, metas in live.items() for meta in metas
    }
    changes: list[Change] = []
    named: set[str] = set()
    desired_names: dict[str, set[str]] = {}  # a lookup name → the domains the specs put it in
    for want in desired:
        named.add(want.address)
        desired_names.setdefault(want.name, set()).add(want.domain)
        if not selector.selects(want.address):
            continue
        changes.append(
            _change_for(
                want,
                live_by_address.get(want.address),
                state.get(want.address),
                rotated=want.address in rotated,
                replace=want.address in replace,
                failed_job=failed_jobs.get(want.address),
            )
        )
    unmanaged: list[str] = []
    kept: list[str] = []
    for address, meta in sorted(live_by_address.items()):
        if address in named or not selector.selects(address):
            continue
        domain = address.split("/", 1)[0]
        policy = policies.get(domain)
        if policy is not None and policy.prune and not policy.keeps(meta.name):
            remembered = state.get(address)
            changes.append(
                Change(
                    address=address,
                    domain=domain,
                    name=meta.name,
                    action=Action.DELETE,
                    before=live_flat(meta),
                    reason=f"pruned: no spec names it (domain {domain} has prune: true)",
                    protect=bool(remembered and remembered.protect),
                )
            )
        else:
            unmanaged.append(address)
            if policy is not None and policy.keeps(meta.name):
                kept.append(address)
    changes.sort(key=lambda c: c.address)
    protected = [c.address for c in changes if c.action is Action.DELETE and c.protect]
    if protected and strict_protect:
        raise PlanError(
            f"the plan would delete protected lookup(s): {', '.join(protected)}",
            hint="lift the protection first: an apply with protect: false and nothing else, "
            "then the delete; or add the lookup to the domain's keep globs",
        )
    stateless = prune_without_state(changes, state, guards)
    if stateless and strict_protect:
        raise PlanError(
            "; ".join(stateless) + "; nothing was sent",
            hint="point --state at the state of the last apply; or, if there never was one, "
            "pass --allow-prune-without-state",
        )
    hints = _unmanaged_hints(unmanaged, kept, policies)
    blast = blast_radius(changes, policies, guards, named, state)
    if blast and strict_protect:
        raise PlanError(
            "; ".join(blast) + "; nothing was sent",
            hint="check the deletes (a spec folder missing? a Domain's prune turned on? a "
            "Domain label changed?), then raise the limit (or pass --allow-mass-destroy) if "
            "they are meant",
        )
    warnings = selector.unmatched(named | set(live_by_address))
    warnings += suspicious_deletes(changes, desired_names)
    warnings += stateless
    warnings += blast
    warnings += [f"{a}: protected, but no spec names it any more" for a in protected]
    warnings += [
        f"{c.address}: could not verify {', '.join(c.unverified)} (the service does not report "
        "them and the state file has no record)"
        for c in changes
        if c.unverified and c.action is not Action.CREATE
    ]
    return Plan(
        changes=tuple(changes),
        unmanaged=tuple(unmanaged),
        kept=tuple(kept),
        hints=tuple(hints),
        warnings=tuple(warnings),
    )


def _unmanaged_hints(
    unmanaged: list[str], kept: list[str], policies: Mapping[str, DomainPolicy]
) -> list[str]:
    """One hint per domain with unmanaged lookups, true to that Domain's settings."""
    hints = []
    kept_set = set(kept)
    for domain in sorted({a.split("/", 1)[0] for a in unmanaged}):
        mine = [a for a in unmanaged if a.startswith(domain + "/")]
        covered = sum(1 for a in mine if a in kept_set)
        policy = policies.get(domain)
        if policy is None:
            hints.append(
                f"{domain}: no Domain document; add one with prune: true to delete unmanaged "
                "lookups, or import them: reconciler import " + domain
            )
        elif covered == len(mine):
            hints.append(f"{domain}: every unmanaged lookup is covered by keep {list(policy.keep)}")
        elif policy.prune:
            hints.append(f"{domain}: covered by keep {list(policy.keep)}; never pruned")
        else:
            extra = f" ({covered} covered by keep globs)" if covered else ""
            hints.append(
                f"{domain}: prune is false{extra}; set prune: true on Domain {domain} to delete "
                f"the others, or import them: reconciler import {domain}"
            )
    return hints


def _change_for(
    want: DesiredLookup,
    meta: LookupMeta | None,
    previous: LookupState | None,
    *,
    rotated: bool = False,
    replace: bool = False,
    failed_job: str | None = None,
) -> Change:
    common: dict[str, Any] = {
        "address": want.address,
        "domain": want.domain,
        "name": want.name,
        "kind": want.kind,
        "endpoint": want.endpoint,
        "protect": want.protect,
        "spec": want.source,
        "overlay": want.overlay,
    }
    if want.state == "absent":
        if meta is None:
            return Change(action=Action.NOOP, reason="absent, as wanted", **common)
        # Protection recorded at the last apply holds until an apply that lifts it has run:
        # `protect: false` and `state: absent` in one change must not delete.
        common["protect"] = want.protect or bool(previous is not None and previous.protect)
        return Change(
            action=Action.DELETE, before=live_flat(meta), reason="state: absent", **common
        )
    after = {path: value for path, value in want.canonical.items() if path not in want.ignore}
    if meta is None:
        return Change(action=Action.CREATE, after=after, reason="not found", **common)
    trusted = previous if failed_job is None else None
    comparison = compare(want, meta, trusted, rotated=rotated)
    before = comparison.live
    reasons = []
    if failed_job is not None:
        reasons.append(f"the last apply's job failed: {failed_job}")
    by_source: dict[str, list[str]] = {}
    for item in comparison.diff:
        by_source.setdefault(item.source, []).append(item.path)
    if "spec" in by_source:
        reasons.append("spec changed: " + ", ".join(by_source["spec"]))
    if "live" in by_source:
        label = "changed in Devo" if trusted is not None else "differs"
        reasons.append(f"{label}: " + ", ".join(by_source["live"]))
    if comparison.csv is not None:
        reasons.append(
            "CSV content changed"
            if comparison.csv.source == "spec"
            else "CSV content in Devo cannot be proven (no record of its upload): the file is "
            "sent again"
            if comparison.csv.source == "unproven"
            else f"data in Devo changed: {comparison.csv.before_rows} rows, "
            f"the file has {comparison.csv.after_rows}"
        )
    if replace:
        reasons.append("replace requested (--replace)")
    request = bool(reasons)
    recorded_protect = previous.protect if previous is not None else False
    if want.protect != recorded_protect and (previous is not None or want.protect):
        comparison.diff.append(
            AttributeChange(
                path="protect", before=recorded_protect, after=want.protect, source="state"
            )
        )
        if not request:
            reasons.append(f"protect: {str(want.protect).lower()} (recorded only, nothing sent)")
    if reasons:
        return Change(
            action=Action.UPDATE,
            before=before,
            after=after,
            diff=comparison.diff,
            csv=comparison.csv,
            unverified=comparison.unverified,
            reason="; ".join(reasons),
            request=request,
            **common,
        )
    return Change(
        action=Action.NOOP,
        before=before,
        after=after,
        unverified=comparison.unverified,
        reason="up to date",
        **common,
    )
