"""The pipeline tests' ``reconciler`` (tests/forkserver.py) answers as the console script does.

Each case runs once through the fork server's client and once through the console script this
environment installed, with the same arguments, environment, working folder and descriptors;
their exit codes, stdout and stderr must be the same, byte for byte. Signals and deaths are
passed on both ways, so that a runner's cancel or timeout lands as it would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.emulator import EmulatorConfig, create_app, free_port
from reconciler.emulator.config import Grant
from tests.forkserver import Forks
from tests.support import ON_THE_FORKSERVER_WORKER, RUNNER_PATH, served, wait_for_server

ROOT = Path(__file__).resolve().parents[1]
CONSOLE_SCRIPT = Path(sys.executable).parent / "reconciler"
TOKEN = "forkserver-token"


# One server a worker (the ``forks`` fixture, tests/conftest.py), and one emulator a module.
pytestmark = ON_THE_FORKSERVER_WORKER


@pytest.fixture(scope="module")
def served_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of the calls: a served emulator, a state file, the runner's PATH."""
    home = tmp_path_factory.mktemp("calls")
    app = create_app(
        EmulatorConfig(create_latency=0, deploy_latency=0, grants=[Grant(token=TOKEN)]),
        db=":memory:",
    )
    with served(app) as url:
        yield {
            "PATH": RUNNER_PATH,
            "HOME": str(home),
            "DEVO_LOOKUP_URL": url,
            "DEVO_TOKEN": TOKEN,
            "RECONCILER_STATE": str(home / "state.json"),
        }


CASES = {
    "version": ["--version"],
    "a broken spec": ["validate", "broken.yaml"],
    "a usage error": ["plan", "--formt", "json"],
    "a plan against the served API": ["plan", "specs"],
    "an apply with no terminal to ask": ["apply", "specs"],
}


@pytest.mark.parametrize("arguments", CASES.values(), ids=list(CASES))
def test_a_fork_answers_as_the_console_script(
    forks: Forks, served_env: dict[str, str], tmp_path: Path, arguments: list[str]
) -> None:
    server, env = forks, served_env
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    (tmp_path / "broken.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Lookup\nmetadata: {domain: acme, name: x}\n"
        "spec:\n  staticQuerry:\n    query: from a select b\n"
    )
    answers = [
        subprocess.run(
            [str(program), *arguments],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        for program in (server.folder / "reconciler", CONSOLE_SCRIPT)
    ]
    forked, real = ((a.returncode, a.stdout, a.stderr) for a in answers)
    assert forked == real
    # The case says something (it is not two empty answers), and the fork served it.
    assert real[1] or real[2]
    log = (server.folder / "server.log").read_text()
    assert f": {[str(server.folder / 'reconciler'), *arguments]}" in log


def _serving(
    server: Forks, env: dict[str, str], tmp_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """``reconciler emulator serve`` through the client, once its fork answers: (client, fork)."""
    port = free_port()
    client = subprocess.Popen(
        [
            str(server.folder / "reconciler"),
            "emulator",
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "emu.db"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_server(f"http://127.0.0.1:{port}/lookup-api/lookup/acme", client)
    [fork] = server.running()
    return client, fork


def test_a_fork_killed_by_a_signal_ends_its_client_by_the_same_signal(
    forks: Forks, served_env: dict[str, str], tmp_path: Path
) -> None:
    server, env = forks, served_env
    client, fork = _serving(server, env, tmp_path)
    os.kill(fork, signal.SIGKILL)
    assert client.wait(timeout=20) == -signal.SIGKILL


def test_a_signal_to_the_client_reaches_its_fork(
    forks: Forks, served_env: dict[str, str], tmp_path: Path
) -> None:
    """A runner cancels a job with SIGINT: the command sees it (the emulator stops cleanly)."""
    server, env = forks, served_env
    client, fork = _serving(server, env, tmp_path)
    client.send_signal(signal.SIGINT)
    assert client.wait(timeout=20) == 0
    assert fork not in server.running()


def test_a_client_that_dies_takes_its_fork_with_it(
    forks: Forks, served_env: dict[str, str], tmp_path: Path
) -> None:
    server, env = forks, served_env
    client, fork = _serving(server, env, tmp_path)
    client.kill()
    client.wait(timeout=20)
    deadline = time.monotonic() + 20
    while fork in server.running():
        assert time.monotonic() < deadline, "the fork outlived its client"
        time.sleep(0.02)
