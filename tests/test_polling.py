"""Polls that learn: the first poll of a job waits for about as long as alike jobs took."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from reconciler.client import JobResult, JobStatus, PollPolicy
from reconciler.client._jobs import JobLatency, wait_for_job
from reconciler.clock import SYSTEM_CLOCK
from reconciler.emulator import EmulatorConfig
from tests.planning import Project, lookup_doc
from tests.support import FakeClock


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
    """A job that is done ``latency`` seconds (of ``clock``) after it started."""

    def __init__(self, clock: FakeClock, latency: float) -> None:
        self.clock, self.ends = clock, clock() + latency

    async def job_statuses(self, domain: str, name: str, job_id: str) -> list[JobStatus]:
        code = "deploy.ok" if self.clock() >= self.ends else "create.start"
        return [JobStatus(code=code)]

    async def lookup_exists(self, domain: str, name: str) -> bool:
        return True


@pytest.mark.anyio
async def test_the_first_poll_waits_for_the_learned_time() -> None:
    clock = FakeClock()
    policy = PollPolicy(initial=0.25, factor=1.6, maximum=5.0, settle=15.0)

    async def one(expected: float | None, waited: float = 0.0) -> int:
        job = _Job(clock, 2.0 - waited)  # submitted ``waited`` seconds ago, done 2 s after that
        result = await wait_for_job(
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
        return result.polls

    assert await one(None) > 3  # 0.25, 0.4, 0.64, 1.02, 1.64, 2.6: the default schedule
    assert await one(2.0) == 1  # once, at 2.2 s
    start = clock()
    assert await one(2.0, waited=1.5) == 1 and clock() - start == pytest.approx(0.7)
    # learned too short: 1.1 s, then the usual growth from a fifth of it: 1.35, 1.75, 2.39
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
async def test_a_leader_that_fails_does_not_hold_the_others(tmp_path: Path, capsys: Any) -> None:
    code, summary = await _apply(tmp_path, capsys, 12, job_failure_pattern="q0*")
    status = {o["address"]: o["status"] for o in summary["outcomes"]}
    assert code == 1
    assert {a for a, s in status.items() if s == "failed"} == {f"acme/q0{i}" for i in range(10)}
    assert status["acme/q10"] == status["acme/q11"] == "done"
