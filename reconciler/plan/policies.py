"""Policies in the plan: every compiled Policy evaluated on every planned change it matches.

A rule sees one change: ``change`` (``action``, ``address``, ``reason``, ``kind``), ``before`` and
``after`` (the canonical config as nested maps; null for a create's before and a delete's after),
``lookup`` (``domain``, ``name``, ``address``, ``labels``, ``kind``, ``protect``), ``csv`` (``rows``,
``bytes``, ``added``, ``removed``, ``changed``, ``before_rows``: doubles, null when unknown; null
for a lookup with no local CSV) and ``domain`` (its Domain: ``name``, ``labels`` and its spec). A
rule that is false, or cannot be evaluated (a missing key, a type error), is a violation at its
enforcement level: policies fail closed.

Pure: the expressions come compiled from ``reconciler.spec.policies``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.desired import DesiredLookup, desired_lookup
from reconciler.errors import Diagnostic
from reconciler.plan.model import Action, Change, Plan, Violation
from reconciler.spec.loader import LoadedDomain, LoadResult
from reconciler.spec.model import DomainDocument, DomainSpec
from reconciler.spec.policies import (
    RULE_VARIABLES,
    Policy,
    Rule,
    cel_bindings,
    combine,
    field_uses,
    nested,
    numbers,
    prune,
    run_combined,
)


@dataclass(frozen=True)
class Subject:
    """What a rule may know of a lookup besides its change: its labels and its local CSV."""

    labels: Mapping[str, str] = field(default_factory=dict)
    rows: int | None = None
    size: int | None = None
    protect: bool = False

    @classmethod
    def of(cls, want: DesiredLookup) -> Subject:
        """What the specs say of a desired lookup: its labels, its local CSV, its protect."""
        csv = want.csv
        return cls(want.labels, csv.rows if csv else None, csv.size if csv else None, want.protect)


def csv_facts(change: Change, subject: Subject) -> dict[str, Any] | None:
    """``csv`` of a rule: what is known of the lookup's rows (None without a local CSV or a diff)."""
    diff = change.csv
    if diff is None and subject.rows is None:
        return None
    facts = {
        "rows": diff.after_rows
        if diff is not None and diff.after_rows is not None
        else subject.rows,
        "bytes": subject.size,
        "before_rows": diff.before_rows if diff is not None else subject.rows,
        "added": diff.added if diff is not None else 0,
        "removed": diff.removed if diff is not None else 0,
        "changed": diff.changed if diff is not None else 0,
    }
    if diff is not None and diff.after_rows is None and change.action is Action.DELETE:
        facts["rows"] = 0
    shaped: dict[str, Any] = numbers(facts)
    return shaped


def context(
    change: Change,
    subject: Subject,
    domain: Mapping[str, Any] | None,
    needed: Collection[str] = RULE_VARIABLES,
    shape: Callable[[Mapping[str, Any] | None], dict[str, Any] | None] = nested,
) -> dict[str, Any]:
    """The variables a rule may read about ``change`` (only those ``needed``: each costs its
    conversion into CEL); ``shape`` nests the canonical configs."""
    made: dict[str, Any] = {}
    for name in needed:  # (a plain branch each: this runs for every change of a big plan)
        if name == "change":
            made[name] = {
                "action": change.action.value,
                "address": change.address,
                "reason": change.reason,
                "kind": change.kind,
            }
        elif name == "before":
            made[name] = shape(change.before if change.action is not Action.CREATE else None)
        elif name == "after":
            made[name] = shape(change.after if change.action is not Action.DELETE else None)
        elif name == "lookup":
            made[name] = {
                "domain": change.domain,
                "name": change.name,
                "address": change.address,
                "labels": dict(subject.labels),
                "kind": change.kind,
                "protect": change.protect or subject.protect,
            }
        elif name == "csv":
            made[name] = csv_facts(change, subject)
        elif name == "domain":
            made[name] = numbers(dict(domain or domain_facts(change.domain)))
        else:
            raise KeyError(name)
    return made


class NestedCache:
    """``nested(flat)`` that reuses its last answer when asked again for an equal config
    (neighbouring lookups of a big plan often share theirs)."""

    def __init__(self) -> None:
        self.flat: Mapping[str, Any] | None = None
        self.shaped: dict[str, Any] | None = None

    def __call__(self, flat: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if flat is None:
            return None
        if self.flat != flat:
            self.flat, self.shaped = flat, nested(flat)
        return self.shaped


def domains_facts(domains: Iterable[LoadedDomain]) -> dict[str, dict[str, Any]]:
    """``domain`` of a rule for each Domain document, by domain name."""
    return {d.model.metadata.name: domain_facts(d.model.metadata.name, d.model) for d in domains}


def domain_facts(name: str, document: DomainDocument | None = None) -> dict[str, Any]:
    """``domain`` of a rule: the Domain's name, labels and spec (its defaults when the specs have
    no Domain document for it); never its credential."""
    spec = document.spec if document is not None else DomainSpec()
    labels = dict(document.metadata.labels) if document is not None else {}
    return {"name": name, "labels": labels, **spec.model_dump(mode="json", exclude={"auth"})}


def evaluate(
    plan: Plan,
    policies: Sequence[Policy],
    subjects: Mapping[str, Subject],
    domains: Mapping[str, Mapping[str, Any]],
    overrides: Sequence[str] = (),
) -> Plan:
    """The plan with every violation of ``policies`` (no-ops included: a rule holds for every
    lookup a plan covers, not only those it changes)."""
    if not policies:
        return plan
    judge = _Judge(policies)
    found: list[Violation] = []
    for change in plan.changes:
        subject = subjects.get(change.address, Subject())
        found.extend(
            Violation(
                policy=rule.policy,
                rule=rule.name,
                enforcement=rule.enforcement,
                address=change.address,
                message=rule.message,
                expr=rule.expression.source,
                where=rule.expression.where,
                error=error,
                overridden=rule.enforcement == "soft-mandatory" and rule.policy in overrides,
            )
            for rule, error in judge.failed(change, subject, domains.get(change.domain))
        )
    return plan.model_copy(update={"violations": tuple(found)})


_ABSENT = object()
_NO_FIELDS: dict[str, Any] = {}  # what a value that is not a map has of each field: nothing


@dataclass
class _Group:
    """Rules that read the same inputs, run as one program; their last result is reused while
    those inputs stay the same."""

    rules: list[Rule]
    reads: tuple[tuple[str, str], ...]  # (variable, field; "" for all of it, "*" for its type)
    program: Any
    context: Any  # its own: only what its rules read is converted into CEL, when it changed
    seen: int = -1  # the judge's counter when it last ran: it runs again once an input is newer
    checked: int = -1  # the change (turn) it was last looked at
    failed: list[tuple[Rule, str | None]] = field(default_factory=list)
    fields: dict[str, frozenset[str] | None] = field(init=False)  # of ``reads``; None: all of it
    slots: frozenset[tuple[str, str]] = field(init=False)  # ``reads``, as a set

    def __post_init__(self) -> None:
        self.fields = _group_fields(self.reads)
        self.slots = frozenset(self.reads)


class _Judge:
    """Evaluates the rules of the policies matching each change of a plan, in plan order.

    Fast because a big plan is mostly alike: rules reading the same inputs run as one program,
    with a context of its own, and not at all while none of those inputs changed since its last
    run; when one did, only the fields that program reads are converted into CEL (a lookup's
    name for a rule on names, not its labels too). Only when a program errs are its rules run
    one by one, to say which and why.
    """

    def __init__(self, policies: Sequence[Policy]) -> None:
        self.policies = policies
        self.new_context = cel_bindings().Context
        self.order = {id(r): n for n, r in enumerate(r for p in policies for r in p.rules)}
        self.slots: dict[tuple[str, str], Any] = {}  # the inputs of the last change
        self.values: dict[str, Any] = {}  # the variables of the last change
        self.read: dict[str, Any] = {}  # and the fields they were cut to
        self.versions: dict[tuple[str, str], int] = {}  # bumped whenever an input changes
        self.counter = 0
        self.shape = NestedCache()
        self.domains: dict[str, Any] = {}
        self.turn = 0  # changes judged so far
        self.dirty: set[tuple[str, str]] = set()  # the inputs that changed at this turn
        self.by_name = any(p.match.names != ["*"] for p in policies)
        self.chosen: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self.sets: dict[tuple[int, ...], tuple[dict[str, frozenset[str] | None], list[_Group]]] = {}

    def _set_for(
        self, chosen: tuple[int, ...]
    ) -> tuple[dict[str, frozenset[str] | None], list[_Group]]:
        if chosen in self.sets:
            return self.sets[chosen]
        matching = [self.policies[i] for i in chosen]
        fields = _fields(matching)
        grouped: dict[tuple[tuple[str, str], ...], list[Rule]] = {}
        for rule in (r for p in matching for r in p.rules):
            reads: list[tuple[str, str]] = []
            for name in sorted(rule.expression.variables):
                reads.append((name, "*"))
                own = field_uses([rule.expression.source], name)
                if fields[name] is None or own is None:
                    reads.append((name, ""))
                else:
                    reads.extend((name, f) for f in sorted(own))
            grouped.setdefault(tuple(reads), []).append(rule)
        groups = [
            _Group(rules, reads, combine(r.expression.source for r in rules), self.new_context())
            for reads, rules in grouped.items()
        ]
        self.sets[chosen] = (fields, groups)
        return fields, groups

    def _chosen(self, change: Change, subject: Subject) -> tuple[int, ...]:
        """The policies matching ``change``; remembered by domain, kind and labels when no
        policy matches by name (then nothing else decides)."""
        if not self.by_name:
            key = (change.domain, change.kind, tuple(subject.labels.items()))
            found = self.chosen.get(key)
            if found is not None:
                return found
        found = tuple(
            i
            for i, p in enumerate(self.policies)
            if p.matches(change.domain, change.name, change.kind, subject.labels)
        )
        if not self.by_name:
            self.chosen[key] = found
        return found

    def _domain(self, name: str, facts: Mapping[str, Any] | None) -> Any:
        """``domain`` of a rule for the lookups of ``name`` (as ``context`` makes it), once."""
        if name not in self.domains:
            self.domains[name] = numbers(dict(facts or domain_facts(name)))
        return self.domains[name]

    def _show(self, slot: tuple[str, str], value: Any) -> None:
        """Record ``value`` for one input; a newer version of it when it differs."""
        if self.slots.get(slot, _ABSENT) == value and slot in self.slots:
            return
        self.slots[slot] = value
        self.counter += 1
        self.versions[slot] = self.counter
        self.dirty.add(slot)

    def failed(
        self, change: Change, subject: Subject, domain: Mapping[str, Any] | None
    ) -> list[tuple[Rule, str | None]]:
        """The rules ``change`` does not pass (with the evaluation error), in policy order."""
        chosen = self._chosen(change, subject)
        if not chosen:
            return []
        self.turn += 1
        self.dirty.clear()
        fields, groups = self._set_for(chosen)
        variables = context(
            change, subject, domain, [n for n in fields if n != "domain"], self.shape
        )
        if "domain" in fields:  # the same for every lookup of a domain: shaped once
            variables["domain"] = self._domain(change.domain, domain)
        for name, value in variables.items():
            wanted = fields[name]
            value = prune(value, wanted)
            if self.read.get(name, _ABSENT) == wanted and self.values[name] == value:
                continue  # as for the change before (one comparison, not one per field)
            self.read[name], self.values[name] = wanted, value
            self._show((name, "*"), type(value).__name__)
            if wanted is None:
                self._show((name, ""), value)
            else:  # not a map (a delete's after, null): each field read is absent
                get = value.get if isinstance(value, dict) else _NO_FIELDS.get
                for f in wanted:
                    self._show((name, f), get(f, _ABSENT))
        failed: list[tuple[Rule, str | None]] = []
        for group in groups:
            # Looked at the change before: only an input that changed now can make it run.
            quiet = group.checked == self.turn - 1 and group.slots.isdisjoint(self.dirty)
            group.checked = self.turn
            if quiet:
                failed.extend(group.failed)
                continue
            if max(map(self.versions.__getitem__, group.reads), default=0) > group.seen:
                for name, wanted in group.fields.items():
                    group.context.add_variable(name, prune(self.values[name], wanted))
                values = run_combined(group.program, group.context, len(group.rules))
                if values is not None:
                    group.failed = [
                        (rule, None) for rule, ok in zip(group.rules, values, strict=True) if not ok
                    ]
                else:
                    group.failed = []
                    for rule in group.rules:
                        passed, error = rule.expression.evaluate(group.context)
                        if not passed:
                            group.failed.append((rule, error))
                group.seen = self.counter
            failed.extend(group.failed)
        return sorted(failed, key=lambda f: self.order[id(f[0])])


def _group_fields(reads: Sequence[tuple[str, str]]) -> dict[str, frozenset[str] | None]:
    """What a group's program reads of each variable: some fields, or all of it (None)."""
    out: dict[str, frozenset[str] | None] = {}
    for name, what in reads:
        known = out.get(name, frozenset())
        if what == "":
            out[name] = None
        elif known is not None:
            out[name] = known | ({what} if what != "*" else set())
    return out


def _fields(matching: Sequence[Policy]) -> dict[str, frozenset[str] | None]:
    """The variables ``matching`` read, each with the fields they read (None: all of it)."""
    out: dict[str, frozenset[str] | None] = {}
    for policy in matching:
        for name, fields in policy.fields.items():
            if name in out:
                before = out[name]
                out[name] = None if before is None or fields is None else before | fields
            else:
                out[name] = fields
    return out


def unknown_overrides(policies: Sequence[Policy], overrides: Sequence[str]) -> list[str]:
    """``--override-policy`` names no Policy defines (a typo must not pass silently)."""
    names = {p.name for p in policies}
    return sorted(set(overrides) - names)


def offline_violations(result: LoadResult, overrides: Sequence[str] = ()) -> list[Diagnostic]:
    """``validate --policies``: each spec judged as the plan that would create it (no service, no
    state: ``before`` is null, ``csv`` holds the local file's rows and bytes), as diagnostics at
    the lookup's spec (an error for a blocking violation, a warning for an advisory or overridden
    one)."""
    if not result.compiled_policies:
        return []
    loaded = {lookup.address: lookup for lookup in result.lookups}
    domains = domains_facts(result.domains)
    changes, subjects = [], {}
    for lookup in result.lookups:
        want = desired_lookup(lookup, result.csv_scans)
        present = want.state == "present"
        changes.append(
            Change(
                address=want.address,
                domain=want.domain,
                name=want.name,
                action=Action.CREATE if present else Action.DELETE,
                kind=want.kind,
                after=want.canonical if present else None,
                protect=want.protect,
                reason="validate --policies: judged as created" if present else "state: absent",
            )
        )
        subjects[want.address] = Subject.of(want)
    judged = evaluate(
        Plan(changes=tuple(changes)), result.compiled_policies, subjects, domains, overrides
    )
    found = []
    for v in judged.violations:
        error = f" (could not be evaluated: {v.error})" if v.error else ""
        found.append(
            loaded[v.address].diagnostic(
                ("metadata", "name"),
                f"policy {v.policy} / {v.rule} [{v.level}]: {v.message}{error}",
                hint=f"{v.expr} ({v.where})",
                severity="error" if v.blocking else "warning",
            )
        )
    return found
