"""When is a job over? The one rule, and the polling loop that applies it.

Devo's documentation lists the statuses (``create.*``, ``push.*``, ``deploy.*``, ``del.*``) but not
which one ends a job. The reconciler decides, in ``job_outcome``:

* **failed** as soon as any status ends in ``.err`` (its message is the failure's);
* **done** when the latest status is ``deploy.ok`` (the data is deployed) or ``del.ok``;
* **settling** when the latest status is ``create.ok``: a server may end a job there. If nothing
  newer arrives for ``settle`` seconds (default 15) the job counts as done, with a note. ``push.ok``
  never settles: ``push.*`` is the synchronous upload that comes *before* creation, so a job that
  goes quiet after it has not even been created yet;
* **running** otherwise (``*.start``, ``push.ok``, unknown codes, no status yet, or an answer in a
  shape the API does not document).

A job that answers 404 while it is followed: a lookup's jobs go with it, so for a delete job the
reconciler asks for the lookup, and a lookup that is gone means the delete is done. For any other
job, a 404 after statuses were seen, with the lookup gone too, means the job failed and took the
lookup with it (a failed create leaves nothing); a 404 before any status is "not visible yet".

``wait_for_job`` polls with a growing interval (0.25 s, ×1.6, at most 5 s), so a short job costs a
few polls and a long one no more than one poll every 5 s. When the run has already seen jobs of the
same kind end (``JobLatency``: the median time to done per endpoint and domain), the first poll is
made just after that, then the interval grows from a fifth of it: a run of many alike jobs costs
about one poll per job. Only the schedule learns; the rule above decides, always.

What is learned is when a job ended, not when a poll happened to see it: the poll that finds a job
done only bounds its end from above, and learning that bound taught each wave of jobs to poll a
little later than the one before (a run of 500 two-second jobs polled its last ones 0.6 s late).
The service stamps every status (``eventdata``); the time from a job's first status to its last,
on the service's own clock, is how long it ran, plus the time its request took to reach the
service. That estimate is kept inside what the polls proved (after the last poll that saw the job
running, not after the one that saw it done). Statuses without usable times fall back to the
polls alone: a job found done at its first poll confirms what was expected, one found later is
counted as ended halfway between the two polls around its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from reconciler.client._models import JobStatus
from reconciler.errors import JobFailed, JobTimeout, NotFoundError

JobStage = Literal["done", "failed", "settling", "running"]
DONE_CODES = frozenset({"deploy.ok", "del.ok"})
SETTLING_CODES = frozenset({"create.ok"})


def moment(eventdata: str | None) -> datetime | None:
    """A status's time (``eventdata``, ISO 8601; UTC unless it says otherwise), or None."""
    if not eventdata:
        return None
    try:
        parsed = datetime.fromisoformat(eventdata)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def status_span(statuses: list[JobStatus]) -> float | None:
    """Seconds from a job's first status to its last, on the service's clock; None unless every
    status has a time, in order, and the span is not empty (a service that stamps all statuses
    alike, or not at all, says nothing about how long its jobs run)."""
    if len(statuses) < 2:
        return None
    times = [moment(s.eventdata) for s in statuses]
    known = [t for t in times if t is not None]
    if len(known) != len(times) or any(b < a for a, b in zip(known, known[1:], strict=False)):
        return None
    span = (known[-1] - known[0]).total_seconds()
    return span if span > 0 else None


def job_outcome(statuses: list[JobStatus]) -> JobStage:
    """Classify a job by its statuses (oldest first)."""
    if any(s.code.endswith(".err") for s in statuses):
        return "failed"
    if not statuses:
        return "running"
    latest = statuses[-1].code
    if latest in DONE_CODES:
        return "done"
    if latest in SETTLING_CODES:
        return "settling"
    return "running"


def job_state(
    statuses: list[JobStatus], *, quiet: float | None, settle: float = 15.0
) -> Literal["done", "failed", "running"]:
    """The one rule, as a verdict: ``settling`` is done once nothing newer came for ``settle`` s.

    ``quiet``: for how long the latest status has been the latest (None: unknown). ``apply`` measures
    it by polling; ``reconciler jobs`` by the latest status's time.
    """
    outcome = job_outcome(statuses)
    if outcome == "settling":
        return "done" if quiet is not None and quiet >= settle else "running"
    return outcome


@dataclass(frozen=True)
class PollPolicy:
    """How often to poll a job: start fast, then slow down."""

    initial: float = 0.25
    factor: float = 1.6
    maximum: float = 5.0
    settle: float = 15.0
    # The growth while nothing is learned of the job's kind: the first job of a kind, which the
    # others wait on. Each of its late polls makes every one of them late: at ×1.6 a 2 s job was
    # seen done at 2.31 s, at ×1.25 at 2.05 s, for two more polls of that one job.
    learning: float = 1.25


class JobLatency:
    """How long jobs of each kind (endpoint and domain) took to be done in this run: the median
    of the last ``window`` (a job that settled at ``create.ok`` or failed does not count)."""

    def __init__(self, window: int = 64) -> None:
        self.window = window
        self.seen: dict[str, list[float]] = {}
        self.leaders: dict[str, asyncio.Event] = {}

    def leader(self, kind: str) -> asyncio.Event | None:
        """None when the caller is the first job of ``kind`` followed with nothing learned yet
        (it polls on the default schedule, and calls ``led`` when it ends); else the event the
        others wait for before their first poll, so a burst of alike jobs costs the polls of one
        while nobody knows how long they take."""
        if kind in self.leaders:
            return self.leaders[kind]
        self.leaders[kind] = asyncio.Event()
        return None

    def led(self, kind: str) -> None:
        """The leading job of ``kind`` ended (well or not): the others go on."""
        event = self.leaders.get(kind)
        if event is not None:
            event.set()

    async def follow(
        self,
        wait: Callable[[float | None, float, float], Awaitable[JobResult]],
        kind: str | None,
        timeout: float,
        clock: Callable[[], float],
        sent: float | None = None,
        answered: float | None = None,
    ) -> JobResult:
        """``wait(expected, waited, timeout left)`` for one job of ``kind``, as this run has
        learned: after the time alike jobs took; the first of a kind leads while the others wait
        for it (at most a minute); what it took is recorded (not when it settled at create.ok).

        ``sent``: when the request that started the job was sent (by ``clock``): times run from
        there, so a slow answer to one POST does not teach the others to poll too early.
        ``answered``: when its answer came; the service stamped the job's first status in
        between."""
        expected = self.expected(kind) if kind else None
        waited, leading = (0.0 if sent is None else max(0.0, clock() - sent)), False
        if kind and expected is None:
            gate = self.leader(kind)
            leading = gate is None
            if gate is not None:
                began = clock()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(timeout, 60.0)):
                        await gate.wait()
                waited += clock() - began
                expected = self.expected(kind)
        try:
            result = await wait(expected, waited, max(0.0, timeout - waited))
        finally:
            if leading and kind:
                self.led(kind)
        if kind and not result.settled:
            reach = 0.0 if sent is None or answered is None else max(0.0, answered - sent)
            self.record(kind, result.took(waited, reach, expected))  # as scheduled
        return result

    def record(self, kind: str, seconds: float) -> None:
        """One job of ``kind`` was done after ``seconds``."""
        times = self.seen.setdefault(kind, [])
        times.append(seconds)
        del times[: -self.window]

    def expected(self, kind: str) -> float | None:
        """The median time to done of ``kind``, or None before any was seen."""
        import statistics

        times = self.seen.get(kind)
        return statistics.median(times) if times else None


@dataclass
class JobResult:
    """How a job ended: its statuses, how many polls it took, and a note when it settled."""

    job_id: str
    statuses: list[JobStatus]
    polls: int
    note: str | None = None
    elapsed: float = 0.0  # from the start of the wait to the poll that saw the end
    settled: bool = False  # counted as done after going quiet at create.ok: its rows may lag
    running_at: float | None = None  # the last poll that saw it running (same origin as elapsed)

    @property
    def last(self) -> JobStatus | None:
        """The latest status."""
        return self.statuses[-1] if self.statuses else None

    def took(self, waited: float, reach: float = 0.0, believed: float | None = None) -> float:
        """How long after its request was sent the job ended, as well as the polls and the
        statuses tell: ``waited`` is the time from sending to the start of the wait, ``reach``
        the request's round trip (its first status was stamped within it), ``believed`` what
        the first poll was scheduled on."""
        by = waited + self.elapsed
        span = status_span(self.statuses)
        told = None if span is None else span + reach
        if self.running_at is not None:  # it ended between two polls
            after = waited + self.running_at
            return (after + by) / 2 if told is None else min(max(told, after), by)
        # Seen done at the first poll: it ended by then, which is all the polls say. What was
        # believed holds unless the statuses tell of a longer job; a shorter one is not taken
        # on their word alone (a service that stamps a job's first status late, after a queue,
        # would make every job look short, and every first poll a miss).
        if believed is None:
            return by if told is None else min(told, by)
        return min(max(believed, told or 0.0), by)


class _StatusReader(Protocol):
    async def job_statuses(self, domain: str, name: str, job_id: str) -> list[JobStatus]: ...

    async def lookup_exists(self, domain: str, name: str) -> bool: ...


async def wait_for_job(
    reader: _StatusReader,
    domain: str,
    name: str,
    job_id: str,
    *,
    timeout: float = 600.0,
    policy: PollPolicy | None = None,
    on_status: Callable[[JobStatus], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    deleting: bool = False,
    expected: float | None = None,
    waited: float = 0.0,
    give_way: Callable[[], Awaitable[None]] | None = None,
) -> JobResult:
    """Poll a job until it is over; raise ``JobFailed`` or ``JobTimeout`` when it does not end well.

    ``deleting`` says the job is a delete: a 404 for it then means done once the lookup is gone.
    ``expected``: how long alike jobs took in this run; the first poll waits for about that
    (less ``waited``, the time already spent waiting since the job was submitted).
    ``give_way``: awaited before each poll of a job whose kind's time is known (apply: while
    changes are still being submitted, see ``Executor``); a leading job, which the others wait
    on, never gives way.
    """
    policy = policy or PollPolicy()
    sleep = sleep or asyncio.sleep
    start = clock()
    delay = policy.initial
    if expected is not None and expected > policy.initial:
        # Just after the usual end (what is learned is when jobs ended, so a few hundredths more
        # is enough), then from a fifth of it, growing as usual.
        await sleep(max(0.0, min(expected * 1.03, timeout, policy.maximum * 4) - waited))
        delay = max(policy.initial, expected / 5)
    seen: set[tuple[str | None, str, str | None]] = set()
    statuses: list[JobStatus] = []
    settling_since: float | None = None
    settling_code: str | None = None
    running_at: float | None = None  # when a poll last saw it not done yet
    polls = 0
    while True:
        if give_way is not None and expected is not None:
            await give_way()
        polls += 1
        asked = clock()
        try:
            statuses = await reader.job_statuses(domain, name, job_id)
        except NotFoundError as exc:
            if exc.missing == "domain":
                raise
            if (deleting or seen) and not await reader.lookup_exists(domain, name):
                now = clock()
                if deleting:
                    note = "the lookup is gone, and its jobs with it: deleted"
                    return JobResult(
                        job_id,
                        statuses,
                        polls,
                        note=note,
                        elapsed=now - start,
                        running_at=running_at,
                    )
                raise JobFailed(
                    f"job {job_id} vanished with its lookup before it ended "
                    f"(last status: {statuses[-1].code if statuses else 'none'})",
                    job_id=job_id,
                    last_code=statuses[-1].code if statuses else None,
                    polls=polls,
                ) from None
            statuses = []  # not visible yet on an eventually consistent server
        for status in statuses:
            key = (status.eventdata, status.code, status.msg)
            if key not in seen:
                seen.add(key)
                if on_status is not None:
                    on_status(status)
        outcome = job_outcome(statuses)
        now = clock()
        if outcome == "settling":
            latest = statuses[-1].code
            if latest != settling_code:
                settling_code, settling_since = latest, now
        else:
            settling_code = settling_since = None
        quiet = None if settling_since is None else now - settling_since
        verdict = job_state(statuses, quiet=quiet, settle=policy.settle)
        if verdict == "done" and outcome == "settling":
            note = (
                f"{statuses[-1].code} and nothing after it for {policy.settle:g}s: counted as done"
            )
            return JobResult(job_id, statuses, polls, note=note, elapsed=now - start, settled=True)
        if verdict == "done":
            return JobResult(job_id, statuses, polls, elapsed=now - start, running_at=running_at)
        if outcome == "failed":
            error = next(s for s in statuses if s.code.endswith(".err"))
            raise JobFailed(
                f"job {job_id} failed: {error.code}: {error.msg or 'no message'}",
                job_id=job_id,
                last_code=error.code,
                polls=polls,
            )
        running_at = asked - start  # it was not over when this poll went out
        if now - start >= timeout:
            last = statuses[-1].code if statuses else None
            raise JobTimeout(
                f"job {job_id} did not finish within {timeout:g}s (last status: {last or 'none'})",
                job_id=job_id,
                last_code=last,
                polls=polls,
            )
        await sleep(min(delay, max(0.0, timeout - (now - start)) or delay))
        delay = min(
            delay * (policy.learning if expected is None else policy.factor), policy.maximum
        )
