"""Polls that learn: the first poll of a job waits for about as long as alike jobs took."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from reconciler.client import PollPolicy
from reconciler.client._jobs import JobLatency
from reconciler.clock import SYSTEM_CLOCK
from reconciler.emulator import EmulatorConfig
from tests.planning import Project, lookup_doc


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
    learned, summary = await _polls(tmp_path / "learned", capsys)
    assert len(learned) == 24 and all(p >= 1 for p in learned)
    assert max(learned) > 1  # the first ones ran before any job had ended
    assert statistics.median(learned) == 1, learned  # most: once, just after the usual end
    assert summary["polls_per_job"] == round(sum(learned) / 24, 2)

    async def unlearned_follow(self: Any, wait: Any, kind: Any, timeout: float, clock: Any) -> Any:
        return await wait(None, 0.0, timeout)

    monkeypatch.setattr(JobLatency, "follow", unlearned_follow)
    unlearned, _ = await _polls(tmp_path / "unlearned", capsys)
    assert min(unlearned) > 1 and sum(unlearned) > 1.5 * sum(learned), (unlearned, learned)


@pytest.mark.anyio
async def test_a_leader_that_fails_does_not_hold_the_others(tmp_path: Path, capsys: Any) -> None:
    code, summary = await _apply(tmp_path, capsys, 12, job_failure_pattern="q0*")
    status = {o["address"]: o["status"] for o in summary["outcomes"]}
    assert code == 1
    assert {a for a, s in status.items() if s == "failed"} == {f"acme/q0{i}" for i in range(10)}
    assert status["acme/q10"] == status["acme/q11"] == "done"
