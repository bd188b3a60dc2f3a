"""What happened to each lookup in an apply: the outcome vocabulary and its counts.

Kept apart from the executor (and light: no HTTP client) so views and the journal can read outcomes
without importing the machinery that produced them.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.plan.model import Action

DONE, FAILED, TIMED_OUT, NOT_ATTEMPTED, SUBMITTED, INTERRUPTED = (
    "done",
    "failed",
    "timed out",
    "not attempted",
    "submitted",
    "interrupted",
)


@dataclass
class Outcome:
    """What happened to one lookup."""

    address: str
    action: Action
    status: str = NOT_ATTEMPTED
    job_id: str | None = None
    message: str = ""
    polls: int = 0
    seconds: float = 0.0
    effective: Action | None = None  # what was really done (a 409 create may become an update)

    @property
    def ok(self) -> bool:
        """Done, or submitted with --no-wait."""
        return self.status in (DONE, SUBMITTED)


def summarize(outcomes: list[Outcome]) -> dict[str, int]:
    """Counts of what was really done: added, changed, destroyed; submitted (``--no-wait``: sent,
    its job not followed, so not known to be done); and lookups not done."""
    counts = {"added": 0, "changed": 0, "destroyed": 0, "submitted": 0, "failed": 0}
    for outcome in outcomes:
        if not outcome.ok:
            counts["failed"] += 1
            continue
        if outcome.status == SUBMITTED:
            counts["submitted"] += 1
            continue
        effective = outcome.effective or outcome.action
        if effective is Action.CREATE:
            counts["added"] += 1
        elif effective is Action.UPDATE:
            counts["changed"] += 1
        elif effective is Action.DELETE:
            counts["destroyed"] += 1
    return counts
