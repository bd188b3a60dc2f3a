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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.canonical import SERVER_OWNED, flatten
from reconciler.client import LookupMeta
from reconciler.coltypes import field_type_name
from reconciler.desired import DesiredLookup
from reconciler.errors import PlanError
from reconciler.plan.model import Action, AttributeChange, Change, CsvChange, Plan
from reconciler.state import LookupState


@dataclass(frozen=True)
class DomainPolicy:
    """A domain's ``prune`` flag and ``keep`` globs."""

    name: str
    prune: bool = False
    keep: tuple[str, ...] = ()

    def keeps(self, name: str) -> bool:
        """True when ``name`` matches one of the ``keep`` globs."""
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.keep)


@dataclass(frozen=True)
class Selector:
    """``--target``/``--exclude`` globs on ``domain/name``."""

    targets: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

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


def live_flat(meta: LookupMeta) -> dict[str, Any]:
    """The canonical config of a live lookup; ``shared`` stands in when ``deployConfig`` is null."""
    flat = flatten(meta.deployConfig)
    if "visibility" not in flat and meta.visibility is not None:
        flat["visibility"] = meta.visibility
    return flat


def live_fields(meta: LookupMeta) -> list[tuple[str, str, bool]]:
    """The observable columns of a live lookup: (name, lower-case type, key flag)."""
    return [(f.column, field_type_name(f.type), f.key) for f in meta.fields]


def compare(desired: DesiredLookup, meta: LookupMeta, previous: LookupState | None) -> Comparison:
    """Field-level comparison of a desired lookup with a live one (see the module docstring)."""
    result = Comparison()
    live = live_flat(meta)
    remembered = previous.canonical if previous is not None else {}
    for path, wanted in sorted(desired.flat.items()):
        if path in desired.ignore or path in SERVER_OWNED:
            continue
        if path in live:
            if live[path] != wanted:
                result.diff.append(AttributeChange(path=path, before=live[path], after=wanted))
        elif path in remembered:
            if remembered[path] != wanted:
                result.diff.append(
                    AttributeChange(
                        path=path, before=remembered[path], after=wanted, source="state"
                    )
                )
        else:
            result.unverified.append(path)
    if meta.deployConfig is None and desired.fields is not None and meta.fields:
        observed = live_fields(meta)
        wanted_fields = desired.fields
        if not any(flag for _, _, flag in observed):
            # A service that marks no key column says nothing about the key: compare the rest.
            observed = [(n, t, False) for n, t, _ in observed]
            wanted_fields = [(n, t, False) for n, t, _ in wanted_fields]
        if observed != wanted_fields:
            result.diff.append(
                AttributeChange(
                    path="fields",
                    before=[list(f) for f in observed],
                    after=[list(f) for f in wanted_fields],
                )
            )
    if desired.csv is not None:
        result.csv = _csv_change(desired, meta, previous, result)
    return result


def _csv_change(
    desired: DesiredLookup, meta: LookupMeta, previous: LookupState | None, result: Comparison
) -> CsvChange | None:
    assert desired.csv is not None
    known = (previous.csv or {}) if previous is not None else {}
    if known.get("sha256"):
        if known["sha256"] == desired.csv.sha256:
            return None
        return CsvChange(
            before_sha256=known["sha256"],
            after_sha256=desired.csv.sha256,
            before_rows=known.get("rows"),
            after_rows=desired.csv.rows,
        )
    if meta.numEntries is not None and meta.numEntries != desired.csv.rows:
        return CsvChange(
            after_sha256=desired.csv.sha256,
            before_rows=meta.numEntries,
            after_rows=desired.csv.rows,
        )
    result.unverified.append("csv content")
    return None


def build_plan(
    desired: Iterable[DesiredLookup],
    live: Mapping[str, list[LookupMeta]],
    state: Mapping[str, LookupState],
    policies: Mapping[str, DomainPolicy] | None = None,
    selector: Selector | None = None,
    *,
    strict_protect: bool = True,
) -> Plan:
    """The plan that takes ``live`` to ``desired``.

    A delete of a protected lookup raises PlanError, or with ``strict_protect=False`` (drift, which
    only reports) stays in the plan with a warning.
    """
    policies = policies or {}
    selector = selector or Selector()
    live_by_address = {
        f"{domain}/{meta.name}": meta for domain, metas in live.items() for meta in metas
    }
    changes: list[Change] = []
    named: set[str] = set()
    for want in desired:
        named.add(want.address)
        if not selector.selects(want.address):
            continue
        changes.append(
            _change_for(want, live_by_address.get(want.address), state.get(want.address))
        )
    unmanaged: list[str] = []
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
    changes.sort(key=lambda c: c.address)
    protected = [c.address for c in changes if c.action is Action.DELETE and c.protect]
    if protected and strict_protect:
        raise PlanError(
            f"the plan would delete protected lookup(s): {', '.join(protected)}",
            hint="set protect: false in the spec (and apply it) before deleting, or add the "
            "lookup to the domain's keep globs",
        )
    warnings = [f"{a}: protected, but no spec names it any more" for a in protected]
    warnings += [
        f"{c.address}: could not verify {', '.join(c.unverified)} (the service does not report "
        "them and the state file has no record)"
        for c in changes
        if c.unverified and c.action is not Action.CREATE
    ]
    return Plan(changes=tuple(changes), unmanaged=tuple(unmanaged), warnings=tuple(warnings))


def _change_for(
    want: DesiredLookup, meta: LookupMeta | None, previous: LookupState | None
) -> Change:
    common: dict[str, Any] = {
        "address": want.address,
        "domain": want.domain,
        "name": want.name,
        "kind": want.kind,
        "endpoint": want.endpoint,
        "protect": want.protect,
        "spec": want.source,
    }
    if want.state == "absent":
        if meta is None:
            return Change(action=Action.NOOP, reason="absent, as wanted", **common)
        return Change(
            action=Action.DELETE, before=live_flat(meta), reason="state: absent", **common
        )
    after = {path: value for path, value in want.flat.items() if path not in want.ignore}
    if meta is None:
        return Change(action=Action.CREATE, after=after, reason="not found", **common)
    comparison = compare(want, meta, previous)
    before = live_flat(meta)
    reasons = []
    if comparison.diff:
        paths = [d.path for d in comparison.diff]
        reasons.append("differs: " + ", ".join(paths))
    if comparison.csv is not None:
        reasons.append("CSV content changed")
    if reasons:
        return Change(
            action=Action.UPDATE,
            before=before,
            after=after,
            diff=comparison.diff,
            csv=comparison.csv,
            unverified=comparison.unverified,
            reason="; ".join(reasons),
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
