"""The lookup × domain grid of a plan (or of drift): one row per lookup name, one column per domain.

Shared by the text, markdown and html views. Each cell is what happens to (or, for drift, what is
wrong with) that lookup in that domain; a blank cell means the lookup is not in that domain at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.plan.model import Action, Change, Plan

# (plan word, drift word, symbol)
_WORDS = {
    Action.CREATE: ("create", "missing", "+"),
    Action.UPDATE: ("update", "differs", "~"),
    Action.DELETE: ("delete", "extra", "-"),
    Action.NOOP: ("no change", "in sync", "="),
}
UNMANAGED = ("unmanaged", "unmanaged", "?")


@dataclass(frozen=True)
class Cell:
    """One lookup in one domain."""

    word: str  # create, update, delete, no change (drift: missing, differs, extra, in sync)
    symbol: str  # + ~ - = ?
    action: str  # the plan action's value, or "unmanaged": the html view's colour
    change: Change | None


@dataclass(frozen=True)
class Grid:
    """Lookup names (rows) × domains (columns)."""

    domains: list[str]
    rows: list[tuple[str, dict[str, Cell]]]

    @property
    def worth_showing(self) -> bool:
        """A grid says more than the list when the plan spans several domains."""
        return len(self.domains) > 1


def grid(plan: Plan, *, drift: bool = False) -> Grid:
    """The plan as a grid."""
    cells: dict[str, dict[str, Cell]] = {}
    for change in plan.changes:
        word, drift_word, symbol = _WORDS[change.action]
        cells.setdefault(change.name, {})[change.domain] = Cell(
            drift_word if drift else word, symbol, change.action.value, change
        )
    for address in plan.unmanaged:
        domain, _, name = address.partition("/")
        cells.setdefault(name, {})[domain] = Cell(UNMANAGED[0], UNMANAGED[2], "unmanaged", None)
    domains = sorted({domain for row in cells.values() for domain in row})
    return Grid(domains, sorted(cells.items()))


__all__ = ["Cell", "Grid", "grid"]
