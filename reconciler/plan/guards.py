"""What a plan refuses or warns of before anything is sent: too many deletes (``--max-destroy``, a
Domain's ``maxDestroy``, or with neither a default share of a domain), prunes where the state knows
nothing, and deletes that look like mistakes. Pure functions of the changes and the state."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Set
from dataclasses import dataclass

from reconciler.plan.model import Action, Change
from reconciler.state import LookupState

#: The default blast radius: with no maxDestroy/--max-destroy, a plan may delete at most this share
#: of a domain's managed lookups (and always fewer than MASS_DESTROY_MIN) without
#: ``--allow-mass-destroy``.
MASS_DESTROY_SHARE = 0.20


MASS_DESTROY_MIN = 3


@dataclass(frozen=True)
class Guards:
    """What a plan refuses unless told otherwise: more deletes than ``--max-destroy`` (or a
    Domain's ``maxDestroy``); with no limit set, a mass destroy (``--allow-mass-destroy``); a
    prune in a domain the state records nothing of, since protection lives in the state
    (``--allow-prune-without-state``); a change that breaks a query using the lookup
    (``--allow-breaking``)."""

    max_destroy: int | None = None
    allow_mass_destroy: bool = False
    allow_prune_without_state: bool = False
    allow_breaking: tuple[str, ...] = ()  # lookups (globs) whose users a change may break
    ignore_references: tuple[str, ...] = ()  # lookups (globs) used but managed elsewhere
    override_policies: tuple[str, ...] = ()  # soft-mandatory policies overridden (by name)


def _listed(changes: list[Change]) -> str:
    shown = ", ".join(c.address for c in changes[:10])
    return shown + (f" ... ({len(changes) - 10} more)" if len(changes) > 10 else "")


def blast_radius(
    changes: list[Change],
    policies: Mapping[str, DomainPolicy],
    guards: Guards,
    named: Set[str],
    state: Mapping[str, LookupState],
) -> list[str]:
    """What exceeds ``--max-destroy``, each Domain's ``maxDestroy``, and (where neither is set)
    the default share of a domain's managed lookups; empty when nothing does."""
    deletes = [c for c in changes if c.action is Action.DELETE]
    found = []
    max_destroy = guards.max_destroy
    if max_destroy is not None and len(deletes) > max_destroy:
        found.append(
            f"the plan would delete {len(deletes)} lookup(s), more than --max-destroy "
            f"{max_destroy}: {_listed(deletes)}"
        )
    for domain in sorted({c.domain for c in deletes}):
        mine = [c for c in deletes if c.domain == domain]
        policy = policies.get(domain)
        if policy is not None and policy.max_destroy is not None:
            if len(mine) > policy.max_destroy:
                found.append(
                    f"the plan would delete {len(mine)} lookup(s) of {domain}, more than its "
                    f"maxDestroy {policy.max_destroy}: {_listed(mine)}"
                )
            continue
        if max_destroy is not None or guards.allow_mass_destroy:
            continue
        managed = {a for a in (*named, *state) if a.split("/", 1)[0] == domain}
        managed |= {c.address for c in mine}
        if len(mine) >= MASS_DESTROY_MIN and len(mine) > MASS_DESTROY_SHARE * len(managed):
            found.append(
                f"the plan would delete {len(mine)} of the {len(managed)} managed lookup(s) of "
                f"{domain}, more than {MASS_DESTROY_SHARE:.0%} with no maxDestroy set: "
                f"{_listed(mine)}"
            )
    return found


def prune_without_state(
    changes: list[Change], state: Mapping[str, LookupState], guards: Guards
) -> list[str]:
    """Prunes in domains the state records nothing of: protection lives in the state, so a
    missing, empty or wrong state cannot tell which live lookups were protected."""
    if guards.allow_prune_without_state:
        return []
    recorded = {address.split("/", 1)[0] for address in state}
    found = []
    for domain in sorted({c.domain for c in changes if _pruned(c)} - recorded):
        mine = [c for c in changes if _pruned(c) and c.domain == domain]
        found.append(
            f"prune would delete {len(mine)} lookup(s) of {domain}, but the state records no "
            f"lookup of {domain} (missing or empty state?), so it cannot tell which were "
            f"protected: {_listed(mine)}"
        )
    return found


def _pruned(change: Change) -> bool:
    return change.action is Action.DELETE and change.reason.startswith("pruned:")


def suspicious_deletes(changes: list[Change], desired_names: Mapping[str, set[str]]) -> list[str]:
    """Loud warnings for deletes that look like mistakes: a lookup a Lookup spec still fans out
    to other domains (a Domain label typo drops a domain from a domainSelector), and a delete
    and a create whose names differ only in case (a rename Devo sees as two lookups)."""
    found = []
    created = {c.address.lower(): c.address for c in changes if c.action is Action.CREATE}
    for change in changes:
        if change.action is not Action.DELETE:
            continue
        elsewhere = desired_names.get(change.name, set()) - {change.domain}
        if elsewhere:
            found.append(
                f"WARNING: {change.address} will be destroyed, yet a Lookup named "
                f"{change.name} still goes to {', '.join(sorted(elsewhere))}: did a Domain "
                f"label or a domains list drop {change.domain}?"
            )
        twin = created.get(change.address.lower())
        if twin is not None and twin != change.address:
            found.append(
                f"WARNING: {change.address} will be destroyed and {twin} created: the names "
                "differ only in case, so this is a delete and a new lookup, not a rename"
            )
    return found


__all__ = [
    "MASS_DESTROY_MIN",
    "MASS_DESTROY_SHARE",
    "DomainPolicy",
    "Guards",
    "blast_radius",
    "prune_without_state",
    "suspicious_deletes",
]


@dataclass(frozen=True)
class DomainPolicy:
    """A domain's ``prune`` flag and ``keep`` globs."""

    name: str
    prune: bool = False
    keep: tuple[str, ...] = ()
    max_destroy: int | None = None  # ``maxDestroy``: the most deletes a plan may hold here

    def keeps(self, name: str) -> bool:
        """True when ``name`` matches one of the ``keep`` globs."""
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.keep)
