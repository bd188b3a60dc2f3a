"""Polls that learn: the first poll of a job waits for about as long as alike jobs took."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.client import JobResult, JobStatus, LookupClient, LookupReader, PollPolicy
from reconciler.client._jobs import JobLatency, status_span, wait_for_job
from reconciler.clock import SYSTEM_CLOCK
from reconciler.emulator import EmulatorConfig
from tests.planning import Project, lookup_doc
from tests.support import FakeClock, assert_sent_as_group


def test_the_latency_is_the_median_of_the_recent_jobs_of_a_kind() -> None:
    latency = JobLatency(window=3)
    assert latency.expected("deploy-csv@acme") is None
    for seconds in (9.0, 1.0, 2.0, 3.0):  # the first falls out of the window
        latency.record("deploy-csv@acme", seconds)
    assert latency.expected("deploy-csv@acme") == 2.0
    assert latency.expected("deploy-csv@other") is None


async def _apply(
    tmp_path: Path, capsys: Any, count: int, **knobs: Any
) -> tuple[int, dict[str, Any]]:
    """Apply ``count`` alike static-query lookups; the exit code and the json summary.

    Real time (jobs of 0.15 s): a clock that jumps at every sleep would end jobs early for
    whichever task sleeps next, and hide what the schedule does."""
    config = EmulatorConfig(create_latency=0.05, deploy_latency=0.1, delete_latency=0.1, **knobs)
    project = Project(tmp_path, config)
    query = "staticQuery: {query: 'from a select k', key: {type: column, column: k}}"
    project.write(*(lookup_doc(f"q{i:02d}", query) for i in range(count)))
    policy = PollPolicy(initial=0.02, factor=1.6, maximum=5.0, settle=15.0)
    code = await project.apply(parallelism=4, output_format="json", poll=policy, clock=SYSTEM_CLOCK)
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


async def _polls(tmp_path: Path, capsys: Any) -> tuple[list[int], dict[str, Any]]:
    code, summary = await _apply(tmp_path, capsys, 24)
    assert code == 0
    return [o["polls"] for o in summary["outcomes"]], summary


@pytest.mark.anyio
@pytest.mark.waits
async def test_after_the_first_jobs_each_job_costs_one_poll(
    tmp_path: Path, capsys: Any, monkeypatch: Any
) -> None:
    # Real time on a shared machine: a starved event loop polls late (fewer polls, never more),
    # so only what load cannot turn around is asserted here; the schedule itself is tested
    # on a virtual clock below.
    learned, summary = await _polls(tmp_path / "learned", capsys)
    assert len(learned) == 24 and all(p >= 1 for p in learned)
    assert statistics.median(learned) <= 2, learned
    assert summary["polls_per_job"] == round(sum(learned) / 24, 2)

    async def unlearned_follow(self: Any, wait: Any, kind: Any, timeout: float, *_: Any) -> Any:
        return await wait(None, 0.0, timeout)

    monkeypatch.setattr(JobLatency, "follow", unlearned_follow)
    unlearned, _ = await _polls(tmp_path / "unlearned", capsys)
    assert sum(unlearned) >= sum(learned), (unlearned, learned)


class _Job:
    """A job that is done ``latency`` seconds (of ``clock``) after it started; its statuses
    carry their times (``eventdata``) when ``stamped``."""

    def __init__(self, clock: FakeClock, latency: float, stamped: bool = False) -> None:
        self.clock, self.began, self.ends, self.stamped = clock, clock(), clock() + latency, stamped

    def _status(self, code: str, at: float) -> JobStatus:
        when = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
        return JobStatus(code=code, eventdata=when if self.stamped else None)

    async def job_statuses(self, domain: str, name: str, job_id: str) -> list[JobStatus]:
        first = self._status("create.start", self.began)
        if self.clock() >= self.ends:
            return [first, self._status("deploy.ok", self.ends)]
        return [first]

    async def lookup_exists(self, domain: str, name: str) -> bool:
        return True


async def _wait(
    job: _Job, clock: FakeClock, policy: PollPolicy, expected: float | None, waited: float
) -> JobResult:
    """``wait_for_job`` for ``job`` on the virtual ``clock``."""
    return await wait_for_job(
        job,
        "acme",
        "l",
        "j",
        policy=policy,
        sleep=clock.sleep,
        clock=clock,
        expected=expected,
        waited=waited,
    )


@pytest.mark.anyio
async def test_the_first_poll_waits_for_the_learned_time() -> None:
    clock = FakeClock()
    policy = PollPolicy(initial=0.25, factor=1.6, maximum=5.0, settle=15.0)

    async def one(expected: float | None, waited: float = 0.0) -> int:
        job = _Job(clock, 2.0 - waited)  # submitted ``waited`` seconds ago, done 2 s after that
        return (await _wait(job, clock, policy, expected, waited)).polls

    # Nothing learned (the leader, whom the others wait on): 0.25 s, then ×1.25 each time, so a
    # 2 s job is seen done at 2.05 s (×1.6, the schedule once something is learned: at 2.31 s)
    start = clock()
    assert await one(None) == 6 and clock() - start == pytest.approx(2.05, abs=0.01)
    assert await one(2.0) == 1  # once, at 2.06 s
    start = clock()
    assert await one(2.0, waited=1.5) == 1 and clock() - start == pytest.approx(0.56)
    # learned too short: 1.03 s, then the usual growth from a fifth of it: 1.28, 1.68, 2.32
    assert await one(1.0) == 4


@pytest.mark.anyio
async def test_while_nothing_is_known_the_others_wait_for_the_leader() -> None:
    latency = JobLatency()
    order: list[str] = []
    release = asyncio.Event()

    async def job(name: str) -> Any:
        async def wait(expected: float | None, waited: float, left: float) -> JobResult:
            order.append(f"{name} polls, expecting {expected}")
            if name == "leader":
                await release.wait()
            return JobResult("j", [], polls=1, elapsed=2.0)

        return await latency.follow(wait, "deploy-csv@acme", 60.0, time.monotonic)

    leader = asyncio.create_task(job("leader"))
    await asyncio.sleep(0)
    others = [asyncio.create_task(job(f"job{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    assert order == ["leader polls, expecting None"]  # the others are waiting
    release.set()
    await asyncio.gather(leader, *others)
    assert [line[: len("jobN polls, expecting 2.0")] for line in order[1:]] == [
        f"job{i} polls, expecting 2.0" for i in range(3)
    ]
    assert latency.expected("deploy-csv@acme") is not None


@pytest.mark.anyio
@pytest.mark.waits
async def test_a_leader_that_fails_does_not_hold_the_others(tmp_path: Path, capsys: Any) -> None:
    code, summary = await _apply(tmp_path, capsys, 12, job_failure_pattern="q0*")
    status = {o["address"]: o["status"] for o in summary["outcomes"]}
    assert code == 1
    assert {a for a, s in status.items() if s == "failed"} == {f"acme/q0{i}" for i in range(10)}
    assert status["acme/q10"] == status["acme/q11"] == "done"


async def _order_of_requests(
    tmp_path: Path, monkeypatch: Any, capsys: Any, maximum: float
) -> list[tuple[str, str]]:
    """Apply 16 alike lookups one at a time (``--parallelism 1``), each request taking 20 ms,
    with jobs of 10 ms, which end long before the last change is sent (the apply succeeds); the
    requests in the order their answers came: ``("submit", name)`` or ``("poll", name)``."""
    order: list[tuple[str, str]] = []
    deploy, statuses = LookupClient.deploy, LookupReader.job_statuses

    async def logged_deploy(
        self: Any, method: str, endpoint: str, domain: str, name: str, *a: Any, **k: Any
    ) -> Any:
        result = await deploy(self, method, endpoint, domain, name, *a, **k)
        order.append(("submit", name))
        return result

    async def logged_statuses(self: Any, domain: str, name: str, job_id: str) -> Any:
        result = await statuses(self, domain, name, job_id)
        order.append(("poll", name))
        return result

    monkeypatch.setattr(LookupClient, "deploy", logged_deploy)
    monkeypatch.setattr(LookupReader, "job_statuses", logged_statuses)
    config = EmulatorConfig(create_latency=0.005, deploy_latency=0.005, added_latency=0.02)
    project = Project(tmp_path, config)
    query = "staticQuery: {query: 'from a select k', key: {type: column, column: k}}"
    project.write(*(lookup_doc(f"q{i:02d}", query) for i in range(16)))
    policy = PollPolicy(initial=0.005, factor=1.6, maximum=maximum, settle=15.0)
    code = await project.apply(parallelism=1, output_format="json", poll=policy, clock=SYSTEM_CLOCK)
    capsys.readouterr()
    assert code == 0
    return order


def _polled_early(order: list[tuple[str, str]]) -> set[str]:
    """The lookups polled before the last change was sent, the leading one (sent first) aside."""
    last_submit = max(i for i, (what, _) in enumerate(order) if what == "submit")
    return {name for what, name in order[:last_submit] if what == "poll"} - {order[0][1]}


@pytest.mark.anyio
@pytest.mark.waits
async def test_polls_give_way_to_the_changes_still_to_be_sent(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    # Polls and submissions share one event loop: while changes wait to be sent, a poll of a
    # job whose end is already expected waits for them (its end is read from its statuses
    # anyway). The leading job, which the others of its kind wait on, is polled as usual.
    order = await _order_of_requests(tmp_path, monkeypatch, capsys, maximum=5.0)
    assert not _polled_early(order), order
    assert {name for what, name in order if what == "poll"} == {f"q{i:02d}" for i in range(16)}


@pytest.mark.anyio
@pytest.mark.waits
async def test_a_poll_gives_way_for_at_most_the_longest_poll_interval(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    # Sending the 16 changes one at a time takes over 0.3 s: polls that give way for at most
    # 10 ms go out meanwhile (a long apply keeps reporting jobs as they end).
    order = await _order_of_requests(tmp_path, monkeypatch, capsys, maximum=0.01)
    assert _polled_early(order), order


async def _run_of_alike_jobs(
    latency: float, count: int, *, stamped: bool, reach: float = 0.01, queued: float = 0.0
) -> tuple[JobLatency, list[int], list[float]]:
    """``count`` jobs of one kind followed one after the other on a virtual clock, each done
    ``latency`` s after its request was sent, whose answer took ``reach`` s; the service stamps
    the first status ``queued`` s after the request reached it. The learning, the polls of each
    job, and how late each job's end was seen."""
    clock = FakeClock()
    learning = JobLatency()
    policy = PollPolicy(initial=0.25, factor=1.6, maximum=5.0, settle=15.0)
    polls, late = [], []
    for _ in range(count):
        sent = clock()
        job = _Job(clock, latency, stamped=stamped)
        job.began = sent + reach / 2 + queued
        clock.advance(reach)  # the answer comes back

        async def wait(
            expected: float | None, waited: float, left: float, job: _Job = job
        ) -> JobResult:
            return await _wait(job, clock, policy, expected, waited)

        result = await learning.follow(wait, "kind@acme", 600.0, clock, sent, sent + reach)
        polls.append(result.polls)
        late.append(clock() - job.ends)
    return learning, polls, late


@pytest.mark.anyio
@pytest.mark.parametrize("stamped", [True, False], ids=["stamped statuses", "no times"])
async def test_what_is_learned_does_not_drift_later_job_after_job(stamped: bool) -> None:
    # Learning the time of the poll that saw a job done (always a little after its end) taught
    # every job to poll a little later than the one before: 2 s jobs were polled 0.6 s late by
    # the end of a run of 500.
    learning, polls, late = await _run_of_alike_jobs(2.0, 300, stamped=stamped)
    assert polls[0] > 1 and all(p == 1 for p in polls[5:]), polls
    expected = learning.expected("kind@acme")
    assert expected is not None and 1.95 <= expected <= 2.06, expected
    # Seen within a few hundredths of its end, the last job as the sixth (the old way: the
    # three-hundredth 0.3 s later than the second, and later with every job)
    assert max(late[5:]) <= 0.13 and late[-1] <= late[5] + 1e-6, late
    if stamped:  # the service's own times teach it at once: no first poll too early
        assert all(p == 1 for p in polls[1:]), polls


@pytest.mark.anyio
async def test_times_that_promise_too_short_a_job_are_kept_within_what_the_polls_proved() -> None:
    # A service that stamps the first status late (a queue before the job starts) makes jobs
    # look shorter than they are: a first poll too early is then a miss, and a miss proves
    # the job ran longer, which is what is learned; a poll that finds the job done does not
    # take the short span's word over what was believed.
    learning, polls, late = await _run_of_alike_jobs(2.0, 100, stamped=True, queued=0.5)
    expected = learning.expected("kind@acme")
    assert expected is not None and 1.9 <= expected <= 2.1, expected
    assert all(p == 1 for p in polls[-50:]), polls
    assert max(late[-50:]) <= 0.1, late


def test_a_job_ended_when_its_statuses_say_within_what_the_polls_proved() -> None:
    def at(*seconds: float | None) -> list[JobStatus]:
        return [
            JobStatus(
                code="create.start" if i == 0 else "deploy.ok",
                eventdata=None
                if s is None
                else datetime.fromtimestamp(1_767_225_600 + s, UTC).isoformat(),
            )
            for i, s in enumerate(seconds)
        ]

    # statuses 1.5 s apart, found done 2.0 s into the wait, which began 0.3 s after sending
    assert JobResult("j", at(0, 1.5), 1, elapsed=2.0).took(0.3, reach=0.1) == pytest.approx(1.6)
    # the span can neither end before the last poll that saw it running nor after the one
    # that saw it done
    assert JobResult("j", at(0, 0.5), 2, elapsed=2.0, running_at=1.0).took(0.0) == 1.0
    assert JobResult("j", at(0, 9.0), 1, elapsed=2.0).took(0.5) == 2.5
    # no usable times: between the two polls around the end, or what the first poll expected
    no_times = at(None, None)
    assert JobResult("j", no_times, 3, elapsed=2.0, running_at=1.0).took(0.0) == 1.5
    assert JobResult("j", no_times, 1, elapsed=2.0).took(0.0, believed=1.8) == 1.8
    assert JobResult("j", no_times, 1, elapsed=2.0).took(0.0) == 2.0
    assert JobResult("j", [], 1, elapsed=2.0).took(0.0, believed=3.0) == 2.0


@pytest.mark.parametrize(
    "times",
    [
        [None, "2026-01-01T00:00:02"],  # one status without a time
        ["2026-01-01T00:00:02", "2026-01-01T00:00:01"],  # out of order
        ["2026-01-01T00:00:01", "2026-01-01T00:00:01"],  # all alike
        ["yesterday", "today"],  # not times
        ["2026-01-01T00:00:01"],  # one status
    ],
)
def test_statuses_whose_times_say_nothing_give_no_span(times: list[str | None]) -> None:
    assert status_span([JobStatus(code="x", eventdata=t) for t in times]) is None


def test_a_span_is_read_from_the_services_own_times() -> None:
    statuses = [
        JobStatus(code="create.start", eventdata="2021-09-29T10:18:10.805"),
        JobStatus(code="create.ok", eventdata="2021-09-29T10:18:11.000Z"),
        JobStatus(code="deploy.ok", eventdata="2021-09-29T10:18:12.305"),
    ]
    assert status_span(statuses) == pytest.approx(1.5)


@pytest.mark.anyio
async def test_a_job_that_waited_for_the_leader_confirms_what_it_was_scheduled_on() -> None:
    # Without usable times, a job seen done at its first poll confirms what it was scheduled on.
    # The jobs that waited for the leader are scheduled on what the leader taught, and must
    # record that, not the time of their poll (a little later: the drift this rule prevents).
    latency = JobLatency()
    release = asyncio.Event()
    scheduled: list[float | None] = []

    async def job(leader: bool) -> Any:
        async def wait(expected: float | None, waited: float, left: float) -> JobResult:
            scheduled.append(expected)
            if leader:
                await release.wait()
                return JobResult("j", [], polls=4, elapsed=2.0, running_at=1.0)
            return JobResult("j", [], polls=1, elapsed=(expected or 0.0) * 1.03)

        return await latency.follow(wait, "deploy-csv@acme", 60.0, time.monotonic)

    leader = asyncio.create_task(job(True))
    await asyncio.sleep(0)
    follower = asyncio.create_task(job(False))
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(leader, follower)
    assert scheduled == [None, 1.5]  # the leader ended between its polls at 1.0 and 2.0 s
    assert latency.seen["deploy-csv@acme"] == [1.5, 1.5]


@pytest.mark.waits
def test_a_test_that_waits_on_the_clock_runs_in_the_waits_group(
    request: pytest.FixtureRequest,
) -> None:
    """The tests marked ``waits`` (several here) share one worker (tests/conftest.py), as the moto
    group's do: under ``--dist loadgroup`` their ids end with the group's name."""
    group = request.node.get_closest_marker("xdist_group")
    assert group is not None and group.args == ("waits",)
    assert_sent_as_group(request, "waits")
