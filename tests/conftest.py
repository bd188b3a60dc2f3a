"""Shared fixtures: a socket guard for tests that must not touch the network, and a CLI runner."""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterator

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner

# Typer's test runner builds the whole click command tree again on every invoke (13 ms for this
# CLI, some 300 invocations in the suite); the tree depends on the app alone, so build it once.
typer.testing._get_command = functools.cache(typer.main.get_command)


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
