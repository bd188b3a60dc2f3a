"""Where requests go: a real Devo endpoint, or the embedded emulator in-process.

The one place that joins the client and the emulator: the client never imports the emulator, and
the emulator knows nothing of settings. Commands ask ``transport_for`` and hand the result to the
client.
"""

from __future__ import annotations

import json
import os
import sqlite3

import httpx

from reconciler.errors import SettingsError, StateError
from reconciler.settings import Settings, emulator_db


def transport_for(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncBaseTransport | None:
    """``transport`` when given; the embedded emulator's when ``settings`` name no endpoint."""
    if transport is not None or not settings.embedded:
        return transport
    return embedded_transport(settings)


def embedded_transport(settings: Settings) -> httpx.AsyncBaseTransport:
    """An in-process transport to the embedded emulator, its database in ``.reconciler/``
    (``RECONCILER_EMULATOR_DB`` moves it), wherever the state is.

    ``RECONCILER_EMULATOR_CONFIG`` (a JSON object of ``EmulatorConfig`` knobs, e.g.
    ``{"deploy_config_null": true, "deploy_latency": 2}``) tunes it.
    """
    # Imported here: a command against a real endpoint need not load the emulator (Starlette).
    from reconciler.emulator import EmulatorConfig, create_app

    knobs = os.environ.get("RECONCILER_EMULATOR_CONFIG")
    try:
        config = EmulatorConfig(**json.loads(knobs)) if knobs else EmulatorConfig()
    except (ValueError, TypeError) as exc:
        raise SettingsError(
            f"RECONCILER_EMULATOR_CONFIG is not a JSON object of emulator knobs: {exc}"
        ) from exc
    db = emulator_db()
    try:
        app = create_app(config, db=db)
    except (OSError, sqlite3.Error) as exc:
        raise StateError(
            f"cannot open the embedded emulator's database {db}: {exc}",
            hint=f"{db.parent}/ must be a folder this user can read and write "
            "(or point RECONCILER_EMULATOR_DB elsewhere)",
        ) from exc
    return httpx.ASGITransport(app=app)
