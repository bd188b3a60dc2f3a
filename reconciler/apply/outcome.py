"""What happened to each lookup in an apply: the outcome vocabulary and its counts, the console
protocol the executor reports to, and the journal entry of one applied change.

Kept apart from the executor (and light: no HTTP client) so views and the journal can read outcomes
without importing the machinery that produced them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from reconciler.plan.model import Action, Change, Violation
from reconciler.state.journal import JournalEntry
from reconciler.timeframe import epoch_millis

if TYPE_CHECKING:  # the views import this module: no HTTP client behind it
    from reconciler.client import JobStatus

#: What happened to one lookup.
Status = Literal["done", "failed", "timed out", "not attempted", "submitted", "interrupted"]
DONE: Status = "done"
FAILED: Status = "failed"
TIMED_OUT: Status = "timed out"
NOT_ATTEMPTED: Status = "not attempted"
SUBMITTED: Status = "submitted"
INTERRUPTED: Status = "interrupted"


@dataclass
class Outcome:
    """What happened to one lookup."""

    address: str
    action: Action
    status: Status = NOT_ATTEMPTED
    job_id: str | None = None
    message: str = ""
    polls: int = 0
    seconds: float = 0.0
    effective: Action | None = None  # what was really done (a 409 create may become an update)
    settled: bool = False  # its job was counted as done after going quiet (rows may lag)

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


class ApplyConsole(Protocol):
    """Where the executor reports progress; the CLI picks a human or a JSON implementation."""

    def change_started(self, change: Change, method: str) -> None: ...

    def job_status(self, change: Change, status: JobStatus) -> None: ...

    def change_finished(self, change: Change, outcome: Outcome) -> None: ...


class NullConsole:
    """Reports nothing (the default, and what tests use)."""

    def change_started(self, change: Change, method: str) -> None:
        return None

    def job_status(self, change: Change, status: JobStatus) -> None:
        return None

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        return None


def journal_entry(
    change: Change, outcome: Outcome, actor: str, commit: str | None, now: datetime
) -> JournalEntry:
    """The entry for one applied change."""
    before = change.before or {}
    after = change.after or {}
    if change.action.value == "delete":
        previous, additions, deletions = dict(before), {}, dict(before)
    elif change.action.value == "create":
        previous, additions, deletions = {}, dict(after), {}
    else:
        changed = {d.path for d in change.diff}
        previous = {p: before.get(p) for p in sorted(changed) if p in before}
        additions = {d.path: d.after for d in change.diff}
        deletions = {p: v for p, v in before.items() if p not in after and p in changed}
        if change.csv is not None:
            previous["csv.sha256"] = change.csv.before_sha256
            additions["csv.sha256"] = change.csv.after_sha256
    effective = outcome.effective.value if outcome.effective else change.action.value
    return JournalEntry(
        id=str(uuid.uuid4()),
        time=now.isoformat(timespec="milliseconds"),
        timestamp=epoch_millis(now),
        actor=actor,
        domain=change.domain,
        lookup=change.name,
        action=effective,
        outcome=outcome.status,
        message=outcome.message,
        jobId=outcome.job_id,
        commit=commit,
        payload={"previous": previous, "additions": additions, "deletions": deletions},
    )


def override_entry(
    violation: Violation, actor: str, commit: str | None, now: datetime
) -> JournalEntry:
    """The entry saying who went ahead despite a soft-mandatory policy, for which lookup."""
    domain, name = violation.address.split("/", 1)
    return JournalEntry(
        id=str(uuid.uuid4()),
        time=now.isoformat(timespec="milliseconds"),
        timestamp=epoch_millis(now),
        actor=actor,
        domain=domain,
        lookup=name,
        action="override-policy",
        outcome="overridden",
        message=f"policy {violation.policy} ({violation.rule}) overridden: {violation.message}",
        commit=commit,
        payload={
            "policy": violation.policy,
            "rule": violation.rule,
            "enforcement": violation.enforcement,
            "expr": violation.expr,
        },
        type="policy-override",
    )
