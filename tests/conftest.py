"""The suite's set-up: bytecode compiled once and cached, test modules imported by one worker at a
time, two xdist workers more than cores, temp files in memory where the machine allows, no
deadline on property tests and one worker for them, no cyclic collection of what the test modules
import and fewer collections after; and shared fixtures (a socket guard, a CLI runner, the fork
server)."""

from __future__ import annotations

import compileall
import contextlib
import fcntl
import gc
import os
import socket
import sys
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hypothesis import is_hypothesis_test, settings

from tests.forkserver import Forks, reconciler_on_path
from tests.support import RUNNER_PATH, CliRunner

# No property test has a deadline. Hypothesis fails an example that takes over 200 ms by default:
# a timed assertion, which this shared, noisy machine breaks at random (a journal test with 40
# fsynced appends did so under load). Slowness is what the benchmarks measure, not the tests.
settings.register_profile("reconciler", deadline=None)
settings.load_profile("reconciler")

# No cyclic collection until the test modules are imported (see pytest_collection_finish): every
# process of the suite imports all of them, and each full collection on the way walked all that
# was imported so far again, to find nothing (about 0.25 s a worker).
gc.disable()


def pytest_configure(config: pytest.Config) -> None:
    """Bytecode is cached, as after a regular ``pip install``, even where
    ``PYTHONDONTWRITEBYTECODE`` is set (CI images often set it).

    Under that variable every process the suite starts (xdist workers, the CLI and emulator
    processes, the benchmark's) compiles every module it imports again (~0.25 s each), and
    pytest rewrites every test module's asserts again in each worker. So the variable goes for
    this run and the processes it starts, and before any worker starts the package is compiled
    once (both optimisation levels: one test runs ``python -O``).

    Applies made by the suite are journalled as ``reconciler-tests``, not as whoever's git
    identity this machine has: the journal entries a test reads do not depend on the machine,
    and no apply starts ``git config user.email`` (some 500 processes a run). The tests of that
    fallback unset the variable (tests/test_state_backends.py) or ask git itself (test_gitrepo).
    And the run's temp folder moves to memory where the machine allows (``_scratch_in_memory``).
    """
    sys.dont_write_bytecode = False
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.setdefault("RECONCILER_ACTOR", "reconciler-tests")
    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist
        _scratch_in_memory()
        root = Path(__file__).resolve().parent.parent / "reconciler"
        for level in (0, 1):
            compileall.compile_dir(root, quiet=1, optimize=level)


# The temp folder a run may move to, and the room it must have there (a run leaves ~260 MB, the
# huge-input tests' files mostly, and pytest keeps the folders of the last three).
MEMORY_FOLDER = "/dev/shm"
MEMORY_FOLDER_ROOM = 2 << 30


def _scratch_in_memory() -> None:
    """The run's temp folder (pytest's ``tmp_path``es, the product's scratch files) is in memory
    when ``TMPDIR`` is not set and /dev/shm is a tmpfs with room that allows programs to run
    from it (the fork server's ``reconciler`` is one); otherwise it stays where it was.

    A run makes some 6,000 files and 39 git repositories and fsyncs state ~6,000 times; on this
    machine's ext4 that was 2-4 s of the kernel's time a run (creating inodes next to ones just
    deleted, journal commits) and waits on the disk. Three whole runs of each, alternating:
    48.9/42.0, 41.8/36.8, 40.1/38.7 s (disk/memory), system time 14.1/10.2, 11.8/9.1, 10.7/9.2
    CPU-s. Nothing a test checks depends on the disk: a killed process loses no page a tmpfs
    holds either. ``TMPDIR=/tmp pytest`` keeps them on disk.
    """
    if "TMPDIR" in os.environ:
        return
    try:
        room = os.statvfs(MEMORY_FOLDER)
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            kinds = [f[2] for f in map(str.split, mounts) if f[1:2] == [MEMORY_FOLDER]]
    except (OSError, IndexError):
        return
    if (
        kinds[-1:] != ["tmpfs"]
        or room.f_flag & (os.ST_NOEXEC | os.ST_RDONLY)
        or room.f_bavail * room.f_frsize < MEMORY_FOLDER_ROOM
        or not os.access(MEMORY_FOLDER, os.W_OK | os.X_OK)
    ):
        return
    os.environ["TMPDIR"] = MEMORY_FOLDER  # for the workers and every process a test starts
    tempfile.tempdir = None  # gettempdir() keeps its first answer: this process asks again


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A test module is imported by one worker at a time (an exclusive ``flock`` on its file).

    Importing a test module the first time, pytest rewrites its asserts (1.2 CPU-s for all of
    them) and caches the result; every worker imports every module, so in a fresh clone, as in
    CI, the four workers mostly rewrote each module at the same time, each for itself. In turn,
    the first one rewrites and the others load what it cached; with the cache warm, each waits
    at most for another's import of that one module. Collecting everything and running nothing
    from a fresh clone, three runs each: 3.0-3.3 s and 4.9-5.5 CPU-s, against 3.8-4.0 s and
    6.9-7.4 CPU-s unlocked; with the cache warm, 2.5 s and 4.2 CPU-s either way.
    """
    if not isinstance(collector, pytest.Module):
        return (yield)
    with open(collector.path, "rb") as source:
        with contextlib.suppress(OSError):  # a file system without locks: import unlocked
            fcntl.flock(source, fcntl.LOCK_EX)  # released when the file closes
        return (yield)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Property tests share one worker (``--dist loadgroup``, group "hypothesis"), and so do the
    tests marked ``waits`` (group "waits").

    Hypothesis reads every module of this checkout for constants to draw from, once per process
    (0.45-0.6 CPU-s where .hypothesis/ holds no cache yet, as in CI's fresh clone), and builds
    its Unicode table (0.15 CPU-s): spread over four workers, the suite paid that four times.

    A ``waits`` test spends most of its time on a real clock, not a core: a job's latency, a
    timeout, a back-off, the kill test's random moments (26 tests, ~26 s of a run, ~10% of it on
    a core). Spread over the workers, three of the four were now and then waiting at once and a
    core stood idle; on one worker, the other three keep both cores busy. Idle core-seconds in
    a run (/proc/stat, every 0.25 s) and the run's time, three pairs alternating, spread/grouped:
    7.2/4.5 (40.6/38.7 s), 6.6/4.2 (40.5/39.4 s), 8.5/4.1 (38.4/36.1 s).

    A test with a group of its own keeps it."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        if is_hypothesis_test(getattr(item, "obj", None)):
            item.add_marker(pytest.mark.xdist_group("hypothesis"))
        elif item.get_closest_marker("waits") is not None:
            item.add_marker(pytest.mark.xdist_group("waits"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the test modules are imported, freeze what they built out of the cyclic collector,
    and resume it.

    A worker holds some 120,000 long-lived objects by then (modules, pydantic schemas,
    hypothesis strategies); every full collection walked all of them again, to find nothing.
    Frozen, they are never walked: the collector's time in a run of the three largest test
    files fell from 1.25 s to 0.62 s. No ``gc.collect()`` first: the few cycles the imports
    left are kept, and a full collection of all of it cost each worker ~0.1 s. Time spent inside
    collections (gc.callbacks, wall clock, summed over the four workers of a whole run): 6.4 s
    when the collector ran while importing and collected before freezing, 4.2 s now. Garbage
    made later is collected as before.

    The youngest generation is collected every 20,000 allocations, not every 700
    (``YOUNG_OBJECTS``): most of what a test allocates is freed by reference counting before a
    collection would have walked it, and fewer young collections mean fewer older ones. Time
    spent inside collections (gc.callbacks, CPU time, summed over the four workers), runs of the
    whole suite: 2.21 s at Python's default thresholds (700/10/10), 1.55 s at 20,000/10/10;
    1.38 and 1.65 s at 50,000/20/20 and 100,000/50/50, no better beyond the noise.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS)
    gc.enable()


# The young generation's threshold for the tests (pytest_collection_finish). It stays under
# reconciler.heap.FREEZE_AT: a paused collector (heap.collector_paused) still freezes only a graph
# the pause itself made big. No test depends on when a cycle is collected.
YOUNG_OBJECTS = 20_000


def pytest_sessionstart(session: pytest.Session) -> None:
    """The xdist controller collects nothing: its collector resumes here."""
    if session.config.pluginmanager.has_plugin("dsession"):
        gc.enable()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers more than cores, since part of the suite waits on processes (the
    emulator and S3 servers, Chromium, killed applies, the benchmark) rather than computing.
    Measured on 2 cores, runs of 4 and 3 workers alternating: 37.8/38.5, 40.7/45.6, 39.2/43.2,
    35.9/36.6 s (the cores busy 94-95% of the run against 92%); 2 workers: 37.7-39.5 s with the
    cores busy 77%; 5 workers: no better than 4. Again with the temp files in memory (fewer waits
    on the disk): 4/3 workers 37.9/39.2, 36.7/38.9, 35.5/38.1, 33.9/37.6 s; 4/5 workers
    34.0/36.8, 37.6/36.6, 38.2/34.6 s. Again with the tests that wait on a clock on one worker
    (group "waits"), on Debian's python: 4/5 workers 37.3/41.4, 39.1/45.5 s."""
    return (os.cpu_count() or 1) + 2


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Fail any attempt to open a network connection; yields the list of attempts."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"network call attempted: {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts


@pytest.fixture(scope="session")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forks]:
    """``reconciler`` forked from a server that has imported it (tests/forkserver.py): the same
    command line in a process of its own, without ~0.25 CPU-s of imports a call. One server a
    worker (0.5 CPU-s to start): the tests that use it share a worker (group "forkserver"),
    but for the pipelines' (group "moto"). Each call brings its own environment and folder."""
    home = tmp_path_factory.mktemp("forkserver")
    with reconciler_on_path(home / "forks", {"PATH": RUNNER_PATH, "HOME": str(home)}) as server:
        yield server


@pytest.fixture
def runner() -> CliRunner:
    """A Typer CLI runner (stderr kept apart from stdout)."""
    return CliRunner()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
