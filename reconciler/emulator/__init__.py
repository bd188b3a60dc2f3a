"""The embedded Lookups API emulator: the default endpoint, the tests' server, the benchmarks' target.

``create_app`` builds the ASGI app (used in-process through ``httpx.ASGITransport``); ``serve`` runs
it on a loopback port with uvicorn (``reconciler emulator serve``); ``served`` serves an app from a
thread of the calling process (the tests' and the quick benchmark's loopback server).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reconciler.emulator.app import create_app
from reconciler.emulator.config import EmulatorConfig, Grant
from reconciler.emulator.core import sign
from reconciler.emulator.faults import FaultInjector

__all__ = [
    "EmulatorConfig",
    "FaultInjector",
    "Grant",
    "create_app",
    "free_port",
    "serve",
    "served",
    "sign",
]


def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    db: str | Path = ".reconciler/emulator.db",
    log_level: str = "warning",
) -> None:
    """Serve the emulator over HTTP until interrupted.

    An injected dropped connection is raised through uvicorn on purpose; it is logged as one line
    (``injected fault: connection dropped``), not as an application error with a traceback.
    """
    import logging

    import uvicorn

    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    app = create_app(config, db=db)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def free_port(host: str = "127.0.0.1") -> int:
    """A port of ``host`` that nothing listens on now (the system's pick)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(app: FaultInjector, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn from a thread of this process, on a free port of ``host``,
    until the block ends; yields the server's root URL (``http://host:port``)."""
    import threading
    import time

    import uvicorn

    port = free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level="critical", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the emulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _QuietDrops:
    """A logging filter: an injected drop becomes one line, without the traceback."""

    def filter(self, record: object) -> bool:
        import logging

        from reconciler.emulator.faults import DroppedConnection

        if isinstance(record, logging.LogRecord) and record.exc_info:
            error = record.exc_info[1]
            if isinstance(error, DroppedConnection):
                record.msg, record.args, record.exc_info = (
                    "injected fault: connection dropped",
                    (),
                    None,
                )
        return True
