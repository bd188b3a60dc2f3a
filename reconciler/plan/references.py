"""The plan and the lookups' users: what a change breaks, how many references use each changed
lookup, and the order the graph imposes on apply.

* A change **breaks** a reference when it destroys the lookup the reference reads, drops the column
  it reads or changes that column's type, or changes the lookup's key (its column or its type: a
  lookup is read by its key). A use held by a query lookup the same plan deletes does not count,
  and a use removed in the same change is not in the tree any more, so it does not count either.
* **Order**: a query lookup is created or updated after the lookups it reads (their jobs waited
  for); a lookup is deleted after the query lookups that read it. Lookups with no such relation
  stay parallel. Each change lists what must end first in ``depends_on``.

Pure functions of the plan and the reference graph.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from reconciler.linq import lookup_refs
from reconciler.plan.details import columns_by_name
from reconciler.plan.model import Action, Change, Plan, UsedBy
from reconciler.spec.references import ReferenceGraph, Use

_WRITES = (Action.CREATE, Action.UPDATE)


def _columns(config: dict[str, Any] | None) -> dict[str, str] | None:
    """Column name → type of a flattened config, when it declares its columns."""
    by_name = columns_by_name((config or {}).get("recipe.source.columns"))
    return None if by_name is None else {n: str(c.get("type")) for n, c in by_name.items()}


def _key_change(change: Change) -> str | None:
    """How the change alters the lookup's key (its kind, its columns, or its column's type)."""
    before, after = change.before or {}, change.after or {}
    for path in ("recipe.key.type", "recipe.key.column", "recipe.key.columns"):
        old, new = before.get(path), after.get(path)
        if path in before and path in after and old != new:
            return f"changes its key ({path.removeprefix('recipe.')}: {old} → {new})"
    key = before.get("recipe.key.column")
    cols_before, cols_after = _columns(before), _columns(after)
    if key is None or cols_before is None or cols_after is None:
        return None
    if key in cols_before and key in cols_after and cols_before[key] != cols_after[key]:
        return f"changes its key {key}'s type ({cols_before[key]} → {cols_after[key]})"
    return None


def _breaks(change: Change, use: Use) -> str | None:
    """What ``change`` does that breaks ``use``, or None."""
    if change.action is Action.DELETE:
        return "destroys it"
    if change.action is not Action.UPDATE:
        return None
    key = _key_change(change)
    if key is not None:
        return key
    if use.column is None:
        return None
    before, after = _columns(change.before), _columns(change.after)
    if before is None or after is None or use.column not in before:
        return None
    if use.column not in after:
        return f"drops its column {use.column}"
    if before[use.column] != after[use.column]:
        return (
            f"changes its column {use.column}'s type ({before[use.column]} → {after[use.column]})"
        )
    return None


def _reads_of_deleted(change: Change) -> set[str]:
    """The lookups a query lookup being deleted reads, from what Devo (or the record) shows."""
    query = (change.before or {}).get("recipe.source.query")
    if not isinstance(query, str):
        return set()
    return {f"{change.domain}/{r.table}" for r in lookup_refs(query) if r.table is not None}


def breaking(plan: Plan, graph: ReferenceGraph, allow: Sequence[str] = ()) -> list[str]:
    """One message per changed lookup whose change breaks a reference, naming each reference
    (file:line); lookups matching an ``--allow-breaking`` glob are left out."""
    deleted = {c.address for c in plan.changes if c.action is Action.DELETE}
    found = []
    for change in plan.changes:
        if change.action is Action.NOOP or any(
            fnmatch.fnmatchcase(change.address, g) for g in allow
        ):
            continue
        broken: list[str] = []
        for use in graph.users_of(change.address):
            if use.user is not None and use.user in deleted:
                continue
            why = _breaks(change, use)
            if why is not None:
                held = f" (in {use.user})" if use.user else ""
                broken.append(f"\n  {use.where}{held} {use.snippet}: {why}")
        if broken:
            found.append(
                f"{change.address}: this change breaks {len(broken)} reference(s) using it:"
                + "".join(broken)
            )
    return found


def annotate(plan: Plan, graph: ReferenceGraph) -> Plan:
    """Each change with the references that use its lookup (``used_by``) and the changes that
    must end before it starts (``depends_on``)."""
    by_address = {c.address: c for c in plan.changes if c.action is not Action.NOOP}
    reads: dict[str, set[str]] = {}
    for user, used in graph.edges():
        reads.setdefault(user, set()).add(used)
    for change in by_address.values():
        if change.action is Action.DELETE:
            reads.setdefault(change.address, set()).update(_reads_of_deleted(change))
    depends: dict[str, set[str]] = {}
    for user, used_set in reads.items():
        for used in used_set:
            first, then = by_address.get(used), by_address.get(user)
            if first is None or then is None or first is then:
                continue
            if then.action in _WRITES and first.action in _WRITES:
                depends.setdefault(user, set()).add(used)  # what it reads exists first
            elif then.action is Action.DELETE and first.action is Action.DELETE:
                depends.setdefault(used, set()).add(user)  # its readers go first
    _drop_cycles(depends)
    changes = []
    for change in plan.changes:
        uses = graph.users_of(change.address) if change.action is not Action.NOOP else []
        update: dict[str, Any] = {}
        if uses:
            update["used_by"] = [
                UsedBy(where=u.where, user=u.user, column=u.column, snippet=u.snippet) for u in uses
            ]
        if change.address in depends:
            update["depends_on"] = sorted(depends[change.address])
        changes.append(change.model_copy(update=update) if update else change)
    return plan.model_copy(update={"changes": tuple(changes)})


def _drop_cycles(depends: dict[str, set[str]]) -> None:
    """Forget the orderings of changes caught in a cycle (possible only between lookups Devo
    already holds, which validation never saw), so apply cannot wait for ever."""
    waiting = {a: set(d) for a, d in depends.items()}
    ready = [a for a in {x for d in depends.values() for x in d} if a not in waiting]
    done: set[str] = set()
    while ready:
        done.add(ready.pop())
        for address, needs in list(waiting.items()):
            needs -= done
            if not needs:
                del waiting[address]
                ready.append(address)
    for address in waiting:
        depends.pop(address, None)
