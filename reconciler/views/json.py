"""The JSON view: the contract's plan JSON, and JSON for apply, jobs, history and validate.

Everything a tool reads: stable keys, one document per command; apply's live events are one JSON
object per line (``JsonConsole``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import IO, TYPE_CHECKING, Any

from reconciler.apply.outcome import INTERRUPTED, ApplyConsole, Outcome, summarize
from reconciler.plan.model import Change, CheckResult, Plan
from reconciler.spec.loader import LoadResult
from reconciler.spec.references import RefsReport, Use
from reconciler.state import LockInfo, State

if TYPE_CHECKING:
    from reconciler.client import JobStatus
    from reconciler.client.job_views import JobView


def plan(plan: Plan, *, color: bool = False, drift: bool = False, verbose: bool = False) -> str:
    """The contract's plan JSON (drift adds ``in_sync``)."""
    document: dict[str, Any] = plan.to_json()
    if drift:
        document["in_sync"] = plan.in_sync
    return json.dumps(document, indent=2, sort_keys=False)


def apply(outcomes: list[Outcome], warnings: Sequence[str] = ()) -> str:
    """The closing ``summary`` event: counts, every lookup's outcome (with the job polls it took),
    polls per followed job, and the plan's warnings."""
    followed = [o for o in outcomes if o.polls]
    return json.dumps(
        {
            "event": "summary",
            **summarize(outcomes),
            "warnings": list(warnings),
            "interrupted": any(o.status == INTERRUPTED for o in outcomes),
            "polls_per_job": round(sum(o.polls for o in followed) / len(followed), 2)
            if followed
            else None,
            "outcomes": [
                {
                    "address": o.address,
                    "status": o.status,
                    "job_id": o.job_id,
                    "message": o.message,
                    "polls": o.polls,
                }
                for o in outcomes
            ],
        }
    )


def jobs(address: str, views: list[JobView]) -> str:
    """A lookup's jobs, oldest first."""
    return json.dumps({"lookup": address, "jobs": [asdict(v) for v in views]}, indent=2)


def history(page: dict[str, Any], offset: int) -> str:
    """One page of the journal, as the journal query returns it."""
    return json.dumps(page, indent=2)


def validate(result: LoadResult) -> str:
    """Whether the specs are valid, with every diagnostic."""
    return json.dumps(
        {
            "valid": not result.errors,
            "files": len(result.files),
            "lookups": len(result.lookups),
            "domains": len(result.domains),
            "policies": len(result.policies),
            "diagnostics": [
                {
                    "path": d.path,
                    "line": d.line,
                    "column": d.column,
                    "field": d.field,
                    "severity": d.severity,
                    "message": d.message,
                    "hint": d.hint,
                }
                for d in result.diagnostics
            ],
        },
        indent=2,
    )


def state(
    loaded: State,
    location: str,
    holder: LockInfo | None,
    snapshots: Mapping[str, int] | None = None,
) -> str:
    """The state document, with where it is, its content snapshots and who holds its lock."""
    document = loaded.document()
    document["location"] = location
    document["snapshots"] = [
        {"sha256": sha, "bytes": size} for sha, size in sorted((snapshots or {}).items())
    ]
    document["lock"] = None if holder is None else holder.model_dump()
    return json.dumps(document, indent=2)


def _use(use: Use) -> dict[str, Any]:
    return {
        "lookup": use.address,
        "column": use.column,
        "path": use.where.rsplit(":", 1)[0],
        "line": use.line,
        "user": use.user,
        "text": use.snippet,
    }


def refs(report: RefsReport) -> str:
    """Each lookup with who uses it and what it uses; unresolved references; the edges."""
    return json.dumps(
        {
            "lookups": [
                {
                    "address": entry.address,
                    "defined": entry.defined,
                    "used_by": [_use(u) for u in entry.used_by],
                    "uses": [_use(u) for u in entry.uses],
                }
                for entry in report.lookups
            ],
            "unresolved": [_use(u) for u in report.unresolved],
            "edges": [
                {"from": user, "to": used, "column": column}
                for user, used, column in report.edges()
            ],
        },
        indent=2,
    )


def checks(results: Sequence[CheckResult]) -> str:
    """``reconciler check``: every check's result, and whether all passed."""
    return json.dumps(
        {
            "passed": all(r.passed for r in results),
            "checks": [r.model_dump(mode="json") for r in results],
        },
        indent=2,
    )


class JsonConsole:
    """One JSON event per line: change_started, job_status, change_finished, summary."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout

    def emit(self, event: str, **data: Any) -> None:
        """Write one event."""
        record = {"event": event, "time": round(time.time(), 3), **data}
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()

    def change_started(self, change: Change, method: str) -> None:
        self.emit(
            "change_started",
            address=change.address,
            action=change.action.value,
            method=method,
            endpoint=change.endpoint,
        )

    def job_status(self, change: Change, status: JobStatus) -> None:
        self.emit(
            "job_status",
            address=change.address,
            code=status.code,
            msg=status.msg,
            eventdata=status.eventdata,
        )

    def change_finished(self, change: Change, outcome: Outcome) -> None:
        self.emit(
            "change_finished",
            address=change.address,
            action=(outcome.effective or outcome.action).value,
            status=outcome.status,
            job_id=outcome.job_id,
            message=outcome.message,
            polls=outcome.polls,
            seconds=round(outcome.seconds, 3),
        )


def console(*, interactive: bool, total: int) -> ApplyConsole:
    """apply's progress for tools: one JSON event per line."""
    return JsonConsole()


if TYPE_CHECKING:  # each view has the signature its Protocol states
    from reconciler.views import kinds

    _plan: kinds.PlanView = plan
    _apply: kinds.ApplyView = apply
    _jobs: kinds.JobsView = jobs
    _history: kinds.HistoryView = history
    _validate: kinds.ValidateView = validate
    _state: kinds.StateView = state
    _refs: kinds.RefsView = refs
    _checks: kinds.ChecksView = checks
    _console: kinds.ConsoleFactory = console
