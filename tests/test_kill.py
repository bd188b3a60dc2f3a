"""The kill -9 property (issue 24, item 1): kill apply at random moments, and after each kill the
next ``plan --detailed-exitcode`` exits 0 only when Devo's rows equal the files.

A run killed while its jobs run used to leave CSV lookups the state knew nothing of; a later edit
that kept the row count then planned "No changes." while Devo kept the old rows. Each trial here
edits some CSVs (same row count, other cells), sometimes deletes or restores a lookup, starts a
real ``reconciler apply`` process against the emulator served on loopback, kills it with SIGKILL
at a random moment, lets the jobs it started end, and checks the plan against the rows the
emulator holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reconciler.cli import app as cli
from reconciler.emulator import EmulatorConfig
from tests.planning import Project, lookup_doc
from tests.support import CliRunner, served

TRIALS = 20
NAMES = ["c0", "c1", "c2", "c3"]
ROWS = 6
COUNTRIES = ["ES", "US", "FR", "DE", "IT", "PT", "NL", "BE"]


def csv_body(name: str) -> str:
    return f"""
        csv:
          file: data/{name}.csv
          hasHeader: true
          columns: [{{name: ip, type: IP4}}, {{name: country, type: STRING}}]
          key: {{type: column, column: ip}}
    """


def write_specs(project: Project, present: dict[str, bool]) -> None:
    project.write(
        *(
            lookup_doc(n, csv_body(n)) if present[n] else lookup_doc(n, "", extra="state: absent")
            for n in NAMES
        )
    )


def write_rows(project: Project, name: str, rng: random.Random) -> None:
    """The same keys (so the same row count), other countries: only content proves a change."""
    rows = [f"10.0.{NAMES.index(name)}.{i},{rng.choice(COUNTRIES)}" for i in range(ROWS)]
    (project.specs / "data" / f"{name}.csv").write_text("ip,country\n" + "\n".join(rows) + "\n")


def devo_matches_files(project: Project, present: dict[str, bool]) -> bool:
    """True when every lookup holds exactly its file's rows (and absent ones do not exist)."""
    store = project.emulator.store
    # Read as the API would answer now: a job's end takes effect in the store when the next
    # request settles it, and a job can end between one request's settling and its answer (a
    # delete answered del.ok whose lookup was still stored, seed 4398625).
    store.settle()
    for name in NAMES:
        exists = store.get("acme", name) is not None
        if not present[name]:
            if exists:
                return False
            continue
        if not exists:
            return False
        lines = (project.specs / "data" / f"{name}.csv").read_text().splitlines()[1:]
        if sorted(store.rows_of("acme", name)) != sorted(lines):
            return False
    return True


# Real `reconciler apply` processes, forked from one that has done the imports (a zygote, as
# Android starts apps): the kill timing is measured from the first request anyway, and a trial
# then costs no interpreter start. The zygote reaps each child and says how it ended.
_ZYGOTE = """
import os, sys
import reconciler.cli, reconciler.commands, reconciler.apply.executor
sys.argv = ["reconciler", *sys.argv[1:]]
for _ in sys.stdin:
    pid = os.fork()
    if pid == 0:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # stdout is the zygote's line to the test
        try:
            reconciler.cli.main()
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        os._exit(0)
    print(pid, flush=True)
    print("ended", os.waitpid(pid, 0)[1], flush=True)
"""


class Zygote:
    """Starts ``reconciler ARGUMENTS`` processes by forking; ``start`` gives the new pid."""

    def __init__(self, arguments: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE, *arguments],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"go\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def ended(self, timeout: float = 0.0) -> bool:
        """True once the zygote has reaped the last child (waiting up to ``timeout``)."""
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if ready:
            line = self.process.stdout.readline()
            assert line.startswith(b"ended"), line
        return bool(ready)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.mark.reliability
@pytest.mark.waits
def test_after_any_kill_the_plan_is_clean_only_when_devo_holds_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    seed = int(os.environ.get("RECONCILER_KILL_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    # Each answer takes 30 ms, as over a network: the submissions then span ~0.1 s, so that about
    # one kill in three lands before they are all answered. Without it a run sent its four
    # submissions within a few milliseconds, and a seed could kill every trial after them (seed
    # 126717: 20 trials, none leaving changes), proving only half the property.
    project = Project(
        tmp_path,
        EmulatorConfig(
            create_latency=0.2, deploy_latency=0.6, delete_latency=0.3, added_latency=0.03
        ),
    )
    present = dict.fromkeys(NAMES, True)
    for name in NAMES:
        write_rows(project, name, rng)
    write_specs(project, present)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    seen = {"clean and equal": 0, "changes": 0}
    with served(project.app) as base:
        scratch = tmp_path / "tmp"  # a killed apply leaves its scratch files: here, not in /tmp
        scratch.mkdir()
        env = {
            **os.environ,
            "DEVO_LOOKUP_URL": base,
            "CI": "",
            "RECONCILER_STATE": str(project.settings.state_path),
            "TMPDIR": str(scratch),
        }
        # Lookups come and go on purpose here: the default blast-radius guard would stop them.
        arguments = ["apply", "--auto-approve", "--allow-mass-destroy", "--parallelism", "2"]
        arguments.append(str(project.specs))
        zygote = Zygote(arguments, env)
        request.addfinalizer(zygote.close)
        for trial in range(TRIALS):
            for name in rng.sample(NAMES, rng.randint(1, len(NAMES))):
                write_rows(project, name, rng)
            if rng.random() < 0.25:
                flipped = rng.choice(NAMES)
                present[flipped] = not present[flipped]
                write_specs(project, present)
            posts = sum(project.emulator.stats.routes.values())
            pid = zygote.start()
            deadline = time.monotonic() + 20
            ended = False
            while sum(project.emulator.stats.routes.values()) == posts and not ended:
                assert time.monotonic() < deadline, f"seed {seed}, trial {trial}: no request"
                ended = zygote.ended(0.01)  # the run has started talking to Devo
            # Before its submits (they all go within ~0.1 s), or while its jobs run or after.
            time.sleep(rng.uniform(0.0, 0.12) if rng.random() < 0.5 else rng.uniform(0.1, 0.9))
            if not ended:
                with contextlib.suppress(ProcessLookupError):  # it may have ended meanwhile
                    os.kill(pid, signal.SIGKILL)
                assert zygote.ended(10)
            # Jobs it started may still run: the plan must be right about them too.
            lock = project.settings.state_path.with_name("state.json.lock")
            if lock.exists():  # the killed run's: released as its user would
                lock_id = json.loads(lock.read_text())["id"]
                unlocked = runner.invoke(cli, ["state", "unlock", lock_id], env=env)
                assert unlocked.exit_code == 0, unlocked.output
            plan = runner.invoke(
                cli,
                ["plan", "--detailed-exitcode", "--allow-mass-destroy", str(project.specs)],
                env=env,
            )
            assert plan.exit_code in (0, 2), f"seed {seed}, trial {trial}: {plan.output}"
            equal = devo_matches_files(project, present)
            # The property: "No changes" only when Devo holds exactly the files.
            assert plan.exit_code == 2 or equal, (
                f"seed {seed}, trial {trial}: the plan says no changes, but Devo's rows differ "
                f"from the files\n{plan.output}"
            )
            seen["clean and equal" if plan.exit_code == 0 else "changes"] += 1
        # And the run after the last kill converges.
        final = runner.invoke(cli, arguments, env=env)
        assert final.exit_code == 0, f"seed {seed}: {final.output}"
        assert devo_matches_files(project, present)
        clean = runner.invoke(cli, ["plan", "--detailed-exitcode", str(project.specs)], env=env)
        assert clean.exit_code == 0, clean.output
    # Both sides of the property were exercised, or the trials proved nothing.
    assert seen["changes"] and seen["clean and equal"], (seed, seen)
