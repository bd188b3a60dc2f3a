"""The suite's set-up: bytecode and rewritten test modules compiled once, two xdist workers more
than cores, Typer's command tree built once; and shared fixtures (a socket guard, a CLI
runner)."""

from __future__ import annotations

import compileall
import functools
import gc
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner

# Typer's test runner builds the whole click command tree again on every invoke (13 ms for this
# CLI, some 300 invocations in the suite); the tree depends on the app alone, so build it once.
typer.testing._get_command = functools.cache(typer.main.get_command)


def pytest_configure(config: pytest.Config) -> None:
    """Before any worker starts: compile the package's bytecode once.

    Where ``PYTHONDONTWRITEBYTECODE`` is set (CI images often set it), every process the suite
    starts (xdist workers, the CLI and emulator processes, the benchmark's) would otherwise
    compile every module again: ~0.25 s each. Writing ``__pycache__`` here is what a regular
    ``pip install`` does; reading it is still allowed under that variable.
    """
    if not hasattr(config, "workerinput"):  # the xdist controller, or a run without xdist
        compileall.compile_dir(Path(__file__).resolve().parent.parent / "reconciler", quiet=1)
        _rewrite_test_modules_once(config)


def _rewrite_test_modules_once(config: pytest.Config) -> None:
    """Cache pytest's assertion-rewritten test modules before the workers start.

    pytest rewrites each test module's asserts when it imports it and caches the result, but not
    under ``PYTHONDONTWRITEBYTECODE``: then each of the three workers rewrites all of them again,
    at once, on two cores. Done once here, serially (~0.7 s), a one-test run used 7.5-8.7 s of
    CPU against 9.5-11.0 s, measured alternating with the old way. This uses pytest's private
    rewrite functions: should they change, the cache is simply not made (the workers rewrite, as
    before); a stale cache is never read (its pycs carry their source's hash, checked on read).
    """
    if config.getoption("assertmode") != "rewrite":
        return
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        tests = Path(__file__).resolve().parent
        for source in [tests / "conftest.py", *sorted(tests.glob("test_*.py"))]:
            cache = rewrite.get_cache_dir(source)
            pyc = cache / (source.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(source, pyc) is None and rewrite.try_makedirs(cache):
                source_hash, code = rewrite._rewrite_test(source, config)
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (ImportError, AttributeError, KeyError, TypeError, OSError):
        return


def pytest_collection_finish(session: pytest.Session) -> None:
    """Once the test modules are imported, freeze what they built out of the cyclic collector.

    A worker holds some 120,000 long-lived objects by then (modules, pydantic schemas,
    hypothesis strategies); every full collection walked all of them again, to find nothing.
    Frozen, they are never walked: the collector's time in a run of the three largest test
    files fell from 1.25 s to 0.62 s. Garbage made later is collected as before.
    """
    gc.collect()
    gc.freeze()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers more than cores, since part of the suite waits on processes (the
    emulator and S3 servers, Chromium, killed applies, the benchmark) rather than computing.
    Measured on 2 cores, runs of 4 and 3 workers alternating: 37.8/38.5, 40.7/45.6, 39.2/43.2,
    35.9/36.6 s (the cores busy 94-95% of the run against 92%); 2 workers: 37.7-39.5 s with the
    cores busy 77%; 5 workers: no better than 4."""
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


@pytest.fixture
def runner() -> CliRunner:
    """A Typer CLI runner (stderr kept apart from stdout)."""
    return CliRunner()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"
