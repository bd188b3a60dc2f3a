"""The views a command shows, one typed Protocol each: every format module's function for a view
has this signature (mypy checks each one against it, see the end of each format module), and
``reconciler.views`` hands out the one a ``--format`` names through a typed factory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from reconciler.apply.outcome import ApplyConsole, Outcome
    from reconciler.client.job_views import JobView
    from reconciler.plan.model import CheckResult, Plan
    from reconciler.spec.loader import LoadResult
    from reconciler.spec.references import RefsReport
    from reconciler.state import LockInfo, State


class PlanView(Protocol):
    """A plan or a drift report (``plan``, ``drift``, ``show``)."""

    def __call__(
        self, plan: Plan, *, color: bool = False, drift: bool = False, verbose: bool = False
    ) -> str: ...


class ApplyView(Protocol):
    """What apply did: the outcomes and the plan's warnings."""

    def __call__(self, outcomes: list[Outcome], warnings: Sequence[str] = ()) -> str: ...


class JobsView(Protocol):
    """A lookup's jobs."""

    def __call__(self, address: str, views: list[JobView]) -> str: ...


class HistoryView(Protocol):
    """One page of the journal."""

    def __call__(self, page: dict[str, Any], offset: int) -> str: ...


class ValidateView(Protocol):
    """What validate found."""

    def __call__(self, result: LoadResult) -> str: ...


class StateView(Protocol):
    """The state: its records, snapshots and lock."""

    def __call__(
        self,
        loaded: State,
        location: str,
        holder: LockInfo | None,
        snapshots: Mapping[str, int] | None = None,
    ) -> str: ...


class RefsView(Protocol):
    """Who uses which lookup."""

    def __call__(self, report: RefsReport) -> str: ...


class ChecksView(Protocol):
    """The checks of the live lookups."""

    def __call__(self, results: Sequence[CheckResult]) -> str: ...


class ConsoleFactory(Protocol):
    """apply's live progress in a format: a console for ``total`` changes, interactive or not."""

    def __call__(self, *, interactive: bool, total: int) -> ApplyConsole: ...
