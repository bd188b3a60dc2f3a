"""Test support: a fake clock, an in-process emulator client, and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from reconciler.clock import Clock
from reconciler.emulator import EmulatorConfig, create_app
from reconciler.emulator import served as emulator_served
from reconciler.emulator.faults import FaultInjector
from reconciler.emulator.store import Store

BASE = "http://emulator.test/lookup-api"


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
