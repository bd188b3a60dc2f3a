"""The embedded Lookups API emulator: the default endpoint, the tests' server, the benchmarks' target.

``create_app`` builds the ASGI app (used in-process through ``httpx.ASGITransport``); ``serve`` runs
it on a loopback port with uvicorn (``reconciler emulator serve``).
"""

from __future__ import annotations

from pathlib import Path

from reconciler.emulator.app import EmulatorConfig, FaultInjector, Grant, create_app, sign

__all__ = ["EmulatorConfig", "FaultInjector", "Grant", "create_app", "serve", "sign"]


def serve(
    config: EmulatorConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    db: str | Path = ".reconciler/emulator.db",
    log_level: str = "warning",
) -> None:
    """Serve the emulator over HTTP until interrupted."""
    import uvicorn

    app = create_app(config, db=db)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
