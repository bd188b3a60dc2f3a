"""The plan's guards as pure functions, table-driven, no server (issue 27, item 6): the blast radius
(``--max-destroy``, a Domain's ``maxDestroy``, the default share), prunes without a state, and the
deletes that look like mistakes."""

from __future__ import annotations

import pytest

from reconciler.plan.guards import (
    DomainPolicy,
    Guards,
    blast_radius,
    prune_without_state,
    suspicious_deletes,
)
from reconciler.plan.model import Action, Change
from reconciler.state import LookupState


def change(address: str, action: Action, reason: str = "") -> Change:
    domain, name = address.split("/", 1)
    return Change(address=address, domain=domain, name=name, action=action, reason=reason)


def deletes(domain: str, n: int, *, pruned: bool = False) -> list[Change]:
    reason = "pruned: no spec names it" if pruned else "state: absent"
    return [change(f"{domain}/l{i}", Action.DELETE, reason) for i in range(n)]


def managed(domain: str, n: int) -> set[str]:
    return {f"{domain}/l{i}" for i in range(n)}


@pytest.mark.parametrize(
    "removed, managed_count, guards, policy_max, refused",
    [
        (2, 10, Guards(), None, None),  # fewer than 3: never a mass destroy
        (3, 10, Guards(), None, "3 of the 10 managed lookup(s) of acme, more than 20%"),
        (3, 20, Guards(), None, None),  # 15%: under the share
        (5, 20, Guards(), None, "5 of the 20 managed"),  # 25%
        (5, 20, Guards(allow_mass_destroy=True), None, None),
        (5, 20, Guards(max_destroy=5), None, None),  # a limit was set: it decides
        (6, 20, Guards(max_destroy=5), None, "delete 6 lookup(s), more than --max-destroy 5"),
        (5, 20, Guards(), 5, None),  # the Domain's own limit decides
        (6, 20, Guards(), 5, "6 lookup(s) of acme, more than its maxDestroy 5: acme/l0"),
    ],
)
def test_blast_radius(
    removed: int, managed_count: int, guards: Guards, policy_max: int | None, refused: str | None
) -> None:
    policies = {"acme": DomainPolicy("acme", prune=True, max_destroy=policy_max)}
    found = blast_radius(
        deletes("acme", removed), policies, guards, managed("acme", managed_count), {}
    )
    if refused is None:
        assert found == []
    else:
        assert len(found) == 1 and refused in found[0], found


def test_the_share_counts_recorded_lookups_as_managed_too() -> None:
    recorded = {a: LookupState() for a in managed("acme", 30)}
    # 4 deletes against 30 recorded lookups (none named by a spec any more): 13%, allowed.
    assert blast_radius(deletes("acme", 4), {}, Guards(), set(), recorded) == []
    # The same deletes where nothing else is known: 4 of 4.
    assert blast_radius(deletes("acme", 4), {}, Guards(), set(), {}) != []


@pytest.mark.parametrize(
    "state, allowed, refused",
    [
        ({}, False, True),  # no state at all
        ({"other/x": LookupState()}, False, True),  # a state of other domains only
        ({"acme/kept": LookupState()}, False, False),  # the state knows acme
        ({}, True, False),  # asked for
    ],
)
def test_prune_without_state(state: dict[str, LookupState], allowed: bool, refused: bool) -> None:
    changes = deletes("acme", 2, pruned=True) + [
        change("acme/gone", Action.DELETE, "state: absent")
    ]
    found = prune_without_state(changes, state, Guards(allow_prune_without_state=allowed))
    assert bool(found) is refused
    if refused:
        assert "prune would delete 2 lookup(s) of acme" in found[0]  # explicit deletes don't count


def test_suspicious_deletes() -> None:
    changes = [
        change("globex/bad_ips", Action.DELETE),
        change("acme/geo", Action.DELETE),
        change("acme/Geo", Action.CREATE),
        change("acme/asn", Action.DELETE),
    ]
    found = suspicious_deletes(changes, {"bad_ips": {"acme", "globex"}, "Geo": {"acme"}})
    assert found == [
        "WARNING: globex/bad_ips will be destroyed, yet a Lookup named bad_ips still goes to "
        "acme: did a Domain label or a domains list drop globex?",
        "WARNING: acme/geo will be destroyed and acme/Geo created: the names differ only in "
        "case, so this is a delete and a new lookup, not a rename",
    ]
