"""``reconciler`` processes forked from one that has imported it already, for the pipeline tests
and the tests that kill an apply.

A pipeline job runs ``reconciler`` as a process (a step's script calls it from PATH); most of
such a process's time is Python importing typer, pydantic, httpx and this package (~0.25 of
~0.35 CPU-s for a plan). The pipeline tests start ~40 of them to check the recipes, not the
imports, and the kill tests want a process to kill, not its imports. So the runner's PATH finds,
before the real console script, a small ``reconciler`` client that hands its argv, environment,
working directory and its stdin, stdout and stderr themselves (the descriptors, passed over a
Unix socket) to a server that has imported everything once, and forks for each call. The fork
runs ``reconciler.__main__.main`` with all of that in place, exits through Python's normal
shutdown (atexit, flushes) and its exit status, or the signal that ended it, becomes the
client's. A client that dies (a job's timeout) takes its fork with it.

What this does not show, other tests do with the console script itself (tests/test_readme.py,
tests/test_spec.py, tests/test_safety.py, tests/test_apply.py): that ``reconciler`` starts as a
process of its own, what it imports, and how it starts under ``python -O``.

Run as a script, this module is the server: ``python forkserver.py SOCKET``.
"""

from __future__ import annotations

import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

# The client: Python without site or environment (-I -S), the standard library only (~10 ms).
_CLIENT = """#!{python} -IS
import json, os, signal, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect({socket!r})
body = json.dumps({{"argv": sys.argv, "env": dict(os.environ), "cwd": os.getcwd()}}).encode()
socket.send_fds(s, [len(body).to_bytes(8, "big")], [0, 1, 2])
s.sendall(body)
replies = s.makefile("rb")
started = replies.readline()
if not started:
    sys.exit("reconciler (forkserver): the server hung up")
fork = int(started)
for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # what a runner sends, passed on
    signal.signal(number, lambda number, frame: os.kill(fork, number))
ended = replies.readline()
if not ended:
    sys.exit("reconciler (forkserver): the server hung up")
code = int(ended)
if code < 0:  # the fork ended by a signal: so does this process, as a shell would see it
    if -code != signal.SIGKILL:  # (its handler cannot be set, nor needs to be)
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


@dataclass(frozen=True)
class Forks:
    """A running server: ``folder`` holds its ``reconciler`` client, ``pid`` is the server's."""

    folder: Path
    pid: int

    def running(self) -> list[int]:
        """The pids of the forks running now (the server's children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        return [int(pid) for pid in children.split()]


@contextmanager
def reconciler_on_path(folder: Path, env: Mapping[str, str]) -> Iterator[Forks]:
    """A folder whose ``reconciler`` runs as a fork of a server started in ``env``, to put first
    on a runner's PATH. The server is stopped on exit."""
    folder.mkdir(parents=True)
    address = str(folder / "server.sock")
    log = folder / "server.log"
    with log.open("wb") as errors:
        server = subprocess.Popen(
            [sys.executable, __file__, address],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
        )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        assert ready == b"ready\n", log.read_text()
        client = folder / "reconciler"
        client.write_text(_CLIENT.format(python=sys.executable, socket=address))
        client.chmod(0o755)
        yield Forks(folder, server.pid)
    finally:
        server.kill()
        server.wait()


def _warm() -> None:
    """Import this package, every module of it, once, as ``reconciler.__main__.main`` would
    have it (what typer and the commands import lazily, each fork still imports itself)."""
    import pkgutil

    import reconciler
    from reconciler.__main__ import prepare

    prepare()
    for module in pkgutil.walk_packages(reconciler.__path__, "reconciler."):
        __import__(module.name)


def _receive(connection: socket.socket) -> tuple[dict[str, object], list[int]]:
    header, fds, _, _ = socket.recv_fds(connection, 8, 3)
    size = int.from_bytes(header, "big")
    body = b""
    while len(body) < size:
        chunk = connection.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the client hung up mid-request")
        body += chunk
    return json.loads(body), fds


def _run(request: dict[str, object], fds: list[int]) -> None:
    """In the fork: become the client's process, then run the command line."""
    from reconciler.__main__ import main

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(str(request["cwd"]))
    os.environ.clear()
    os.environ.update(request["env"])  # type: ignore[arg-type]
    sys.argv = list(request["argv"])  # type: ignore[call-overload]
    main()


def serve(address: str) -> None:
    """Accept clients until killed; fork one process per client, report how each ended.

    Nothing here cleans up on the way out: a fork leaves through this function too, with
    SystemExit, and must leave the server's socket as it is."""
    sys.path[0] = str(Path(sys.executable).parent)  # as for the console script, not tests/
    _warm()
    # The forks' collector then leaves the server's objects alone, and so does their exit
    # (with them, a fork's normal shutdown costs 0.10 CPU-s, 0.03 without; Python's gc docs
    # give this use of freeze).
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(address)
    listener.listen(64)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ, None)
    running: dict[int, tuple[int, socket.socket]] = {}  # fork's pid: its pidfd, its client
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in events.select():
            if key.data is None:
                connection, _ = listener.accept()
                try:
                    request, fds = _receive(connection)
                except (OSError, ValueError) as exc:  # a client gone mid-request: the next one
                    sys.stderr.write(f"dropped a request: {exc!r}\n")
                    connection.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    events.close()
                    listener.close()
                    connection.close()
                    for pidfd, client in running.values():
                        os.close(pidfd)
                        client.close()
                    _run(request, fds)
                    sys.exit(0)
                for fd in fds:
                    os.close(fd)
                sys.stderr.write(f"fork {pid}: {request['argv']}\n")
                sys.stderr.flush()
                with suppress(OSError):  # a client gone already: its hang-up is seen below
                    connection.sendall(f"{pid}\n".encode())
                pidfd = os.pidfd_open(pid)
                running[pid] = (pidfd, connection)
                events.register(pidfd, selectors.EVENT_READ, ("ended", pid))
                events.register(connection, selectors.EVENT_READ, ("client", pid))
            elif key.data[0] == "ended":  # report the exit status (-N: signal N) and forget it
                pid = key.data[1]
                pidfd, connection = running.pop(pid)
                events.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                if connection.fileno() != -1:
                    events.unregister(connection)
                    with suppress(OSError):
                        connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
                    connection.close()
            else:  # the client hung up (a job's timeout killed it): so does its fork
                pid = key.data[1]
                if pid not in running:  # its fork ended in the same round, and was reported
                    continue
                events.unregister(key.fileobj)
                running[pid][1].close()
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    serve(sys.argv[1])
