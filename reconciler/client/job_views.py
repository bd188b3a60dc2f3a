"""A lookup's recent jobs as people expect to see them (the data of ``reconciler jobs``).

For each job: its statuses in order (time, code, message), its stage (running / done / failed, by
``reconciler.client.job_state``, the same rule apply follows: a job whose latest status is
``create.ok`` and older than the settle time is done), when it was submitted and when it stopped, and
how long it ran. The clock is injected (``now``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from reconciler.client import JobStatus, LookupReader, PollPolicy, job_state
from reconciler.client._jobs import moment


@dataclass
class JobView:
    """One job, summarised."""

    id: str
    stage: str
    submitted: str | None
    stopped: str | None
    seconds: float | None
    statuses: list[dict[str, Any]]

    @property
    def last(self) -> dict[str, Any] | None:
        """The latest status."""
        return self.statuses[-1] if self.statuses else None


def job_view(
    job_id: str,
    statuses: list[JobStatus],
    *,
    now: datetime | None = None,
    settle: float = PollPolicy().settle,
) -> JobView:
    """Summarise one job's statuses."""
    now = now or datetime.now(UTC)
    first = moment(statuses[0].eventdata) if statuses else None
    last = moment(statuses[-1].eventdata) if statuses else None
    quiet = (now - last).total_seconds() if last is not None else None
    stage = job_state(statuses, quiet=quiet, settle=settle)
    stopped = last if stage != "running" else None
    end = stopped or now
    seconds = round((end - first).total_seconds(), 3) if first else None
    return JobView(
        id=job_id,
        stage=stage,
        submitted=first.isoformat(timespec="milliseconds") if first else None,
        stopped=stopped.isoformat(timespec="milliseconds") if stopped else None,
        seconds=seconds,
        statuses=[{"time": s.eventdata, "code": s.code, "msg": s.msg} for s in statuses],
    )


async def job_views(
    reader: LookupReader, domain: str, name: str, job_id: str | None = None
) -> list[JobView]:
    """The lookup's recent jobs (or the one ``job_id``), oldest first."""
    ids = [job_id] if job_id else await reader.job_ids(domain, name)
    views = []
    for one in ids:
        views.append(job_view(one, await reader.job_statuses(domain, name, one)))
    return views
