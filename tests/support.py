"""Test support: a fake clock, an in-process emulator client, and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import typer.main
import typer.testing
from hypothesis import strategies as st

from reconciler.clock import Clock
from reconciler.emulator import EmulatorConfig, create_app
from reconciler.emulator import served as emulator_served
from reconciler.emulator.faults import FaultInjector
from reconciler.emulator.store import Store

BASE = "http://emulator.test/lookup-api"
#: A CI runner's PATH as the tests give it to a job: this Python's tools, then the system's.
RUNNER_PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])

# Worker groups (``--dist loadgroup``): the tests marked with one share one xdist worker.
#: moto's S3 server and the pipelines: moto and boto3 are imported, and the fork server (the
#: ``forks`` fixture, tests/conftest.py) started, in one worker instead of in each (0.6 CPU-s and
#: 0.5 CPU-s). xdist hands out the groups with the most tests first: this one follows
#: test_architecture's.
ON_THE_MOTO_WORKER = pytest.mark.xdist_group("moto")
#: The other users of the ``forks`` fixture: its server is started in one worker, not in each.
ON_THE_FORKSERVER_WORKER = pytest.mark.xdist_group("forkserver")


def assert_sent_as_group(request: pytest.FixtureRequest, group: str) -> None:
    """Under ``--dist loadgroup`` (the suite's default) xdist sends the tests of a group to one
    worker, and marks each test's id with the group's name to do so: the running test's id must
    end with ``@group``. A pytest whose node ids drop that mark (9.2: pytest-dev/pytest-xdist#1386)
    spreads the group over every worker, with no error: this is that error."""
    if getattr(request.config.option, "loadgroup", False):  # set in xdist's workers only
        assert request.node.nodeid.endswith(f"@{group}"), (
            f"{request.node.nodeid}: xdist_group is not honoured by this pytest and xdist"
        )


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it instead of waiting."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class JumpingClock:
    """Real time plus the length of every sleep: waits return at once, yet time moves as if they
    had passed. Shared by a test's emulator (whose jobs advance with it) and the client polling
    them, a job that takes two seconds finishes in no real time, while anything that waits on the
    real clock still sees it move."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += max(0.0, seconds)
        await asyncio.sleep(0)  # still let the other tasks run

    def clock(self) -> Clock:
        """The tool's Clock reading this one."""
        return Clock(monotonic=self.monotonic, wall=self, sleep=self.sleep)


def make_app(
    config: EmulatorConfig | None = None, *, clock: Any = None, db: str | Path = ":memory:"
) -> FaultInjector:
    """An emulator app with an optional fake clock."""
    store = Store(db, clock=clock) if clock is not None else Store(db)
    return create_app(config or EmulatorConfig(), store=store)


def asgi_client(app: FaultInjector, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client talking to ``app`` in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, **kwargs)


@contextmanager
def served(app: FaultInjector) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a loopback port in a thread; yields the API's base URL."""
    with emulator_served(app) as root:
        yield root + "/lookup-api"


def wait_for_server(url: str, process: Any, seconds: float = 20.0) -> None:
    """Poll ``url`` until a server started as ``process`` answers (fail if it exits or times out)."""
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=1) as client:  # one client: httpx.get builds one (30 ms) per call
        while True:
            try:
                client.get(url)
                return
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, (
                    "server did not start"
                )
                time.sleep(0.05)


def git(folder: Path, *args: str) -> None:
    """``git -C folder ARGS`` with a fixed identity for commits (none may be configured here)."""
    subprocess.run(
        ["git", "-C", str(folder), "-c", "user.email=t@example.com", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
    )


def s3_client(endpoint: str) -> Any:
    """A boto3 S3 client of the moto server at ``endpoint`` (any key will do there)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="moto",
        aws_secret_access_key="moto",
        region_name="us-east-1",
    )


@contextmanager
def moto_s3(*buckets: str) -> Iterator[str]:
    """A moto S3 server on a loopback port with ``buckets`` made; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = s3_client(endpoint)
    for bucket in buckets:
        client.create_bucket(Bucket=bucket)
    try:
        yield endpoint
    finally:
        server.stop()


class CliRunner(typer.testing.CliRunner):
    """Typer's test runner, turning each Typer app into its click command once.

    Typer's own ``invoke`` builds the whole command tree again on every call (13 ms for this CLI,
    some 300 invocations in the suite); the tree depends on the app alone. This ``invoke`` does
    what Typer's does with the public parts: ``typer.main.get_command`` (cached per app),
    ``isolation`` for the streams and the environment, and ``typer.testing.Result``.
    """

    def invoke(
        self,
        app: typer.Typer,
        args: str | Sequence[str] | None = None,
        input: bytes | str | None = None,
        env: Mapping[str, str | None] | None = None,
        catch_exceptions: bool = True,
        color: bool = False,
        **extra: Any,
    ) -> typer.testing.Result:
        command = _command_of(app)
        exc_info: Any = None
        exception: BaseException | None = None
        return_value: Any = None
        exit_code = 0
        with self.isolation(input=input, env=env, color=color) as (out, err, both):
            if isinstance(args, str):
                args = shlex.split(args)
            prog_name = extra.pop("prog_name", command.name or "root")
            try:
                return_value = command.main(args=args or (), prog_name=prog_name, **extra)
            except SystemExit as exc:
                exc_info = sys.exc_info()
                code = 0 if exc.code is None else exc.code
                if code != 0:
                    exception = exc
                if not isinstance(code, int):
                    sys.stdout.write(f"{code}\n")
                    code = 1
                exit_code = code
            except Exception as exc:
                if not catch_exceptions:
                    raise
                exception, exit_code, exc_info = exc, 1, sys.exc_info()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                stdout, stderr, output = out.getvalue(), err.getvalue(), both.getvalue()
        return typer.testing.Result(
            self, stdout, stderr, output, return_value, exit_code, exception, exc_info
        )


_COMMANDS: dict[int, tuple[typer.Typer, Any]] = {}


def _command_of(app: typer.Typer) -> Any:
    """The click command of ``app``, built once (the app is kept so its id is not reused)."""
    if id(app) not in _COMMANDS:
        _COMMANDS[id(app)] = (app, typer.main.get_command(app))
    return _COMMANDS[id(app)][1]


#: Pieces of CSV bytes that trip readers up: quotes, lone CRs, NULs, broken UTF-8, byte-order marks.
CSV_PIECES = [
    b"10.0.0.1",
    b"10.0.0.2",
    b"7",
    b"x",
    b"",
    b",",
    b"\n",
    b"\r\n",
    b"\r",
    b'"',
    b" ",
    b"\x00",
    b"\xff",
    b"\xc3\xa9",
    "\ufeff".encode(),
    b"ip,n,name\n",
]


def csv_bytes(*more: bytes, max_size: int) -> st.SearchStrategy[bytes]:
    """Any bytes made of ``CSV_PIECES`` (and ``more``): for the properties over any upload."""
    return st.lists(st.sampled_from([*CSV_PIECES, *more]), max_size=max_size).map(b"".join)
