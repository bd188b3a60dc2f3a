"""Helpers for plan/apply tests: a project folder with specs, and an emulator to apply them to."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx

from reconciler.cli_options import emit, write_line
from reconciler.client import LookupClient, LookupReader, PollPolicy
from reconciler.commands import ApplyRequest, run_apply
from reconciler.emulator import EmulatorConfig
from reconciler.engine import PlanRun, make_plan
from reconciler.plan.builder import Selector
from reconciler.settings import Settings
from tests.support import JumpingClock, make_app

KINDS: dict[str, str] = {
    "csv_file": """
        csv:
          file: data/geo.csv
          hasHeader: true
          columns: [{name: ip, type: IP4}, {name: country, type: STRING}]
          key: {type: column, column: ip}
    """,
    "csv_s3": """
        csv:
          fileProvider:
            bucketName: bucket
            keyName: feeds/bad.csv
            transferOwnership: false
            accessKey: ${env:TEST_S3_ACCESS}
            secretKey: ${env:TEST_S3_SECRET}
          columns: [{name: ip, type: IP4}, {name: score, type: INT4}]
    """,
    "static": """
        staticQuery:
          query: from a select user, role
          key: {type: column, column: user}
    """,
    "periodic": """
        periodicQuery:
          query: from a select ip, count() as n group by ip
          refreshPeriod: 10m
    """,
    "periodic_dated": """
        periodicQuery:
          query: from a select ip group by ip every 1h
          startDate: "2026-01-01T00:00:00Z"
    """,
    "sliding": """
        slidingWindowQuery:
          query: from a select domain, count() as hits group by domain
          windowSize: 1d
          refreshPeriod: 15m
    """,
    "recipe": """
        recipe:
          recipeType: periodic
          source: {query: "from a select host, owner"}
          key: {type: column, column: host}
          lookupType: {type: historic, instantPolicy: natural}
          secondaryIndexes: {type: all}
          refreshMillis: 3600000
          startMillis: 1767225600000
    """,
}
SECRETS = {"TEST_S3_ACCESS": "AKIA-canary-access", "TEST_S3_SECRET": "canary-s3-secret-42"}
# The emulator's jobs here take tens of milliseconds: poll them at that pace, not Devo's.
FAST_POLL = PollPolicy(initial=0.01, factor=1.5, maximum=0.05, settle=0.5)
GEO = "ip,country\n10.0.0.1,ES\n10.0.0.2,US\n10.0.0.3,FR\n"


def lookup_doc(name: str, body: str, *, domain: str = "acme", extra: str = "") -> str:
    """A Lookup document with ``body`` (a source block, indented as in KINDS) under ``spec``."""
    parts = [
        textwrap.indent(textwrap.dedent(t).strip("\n"), "  ") for t in (extra, body) if t.strip()
    ]
    spec = "\n".join(parts)
    return (
        f"apiVersion: reconciler/v1\nkind: Lookup\nmetadata: {{domain: {domain}, name: {name}}}\n"
        f"spec:\n{spec}\n"
    )


class Project:
    """A specs folder, a state file and an in-process emulator."""

    def __init__(self, root: Path, config: EmulatorConfig | None = None) -> None:
        self.root = root
        self.specs = root / "specs"
        (self.specs / "data").mkdir(parents=True, exist_ok=True)
        (self.specs / "data" / "geo.csv").write_text(GEO)
        # Jobs take their latency in the emulator's time; the client's polls jump the shared
        # clock forward instead of waiting for it.
        self.clock = JumpingClock()
        self.app = make_app(
            config or EmulatorConfig(create_latency=0.0, deploy_latency=0.02, delete_latency=0.02),
            clock=self.clock,
        )
        self.settings = Settings(
            "http://devo.test/lookup-api", state_path=root / ".reconciler" / "state.json"
        )

    @property
    def emulator(self) -> Any:
        return self.app.emulator

    def transport(self) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=self.app)

    def write(self, *documents: str, file: str = "lookups.yaml") -> None:
        (self.specs / file).write_text("---\n".join(documents))

    async def plan(self, selector: Selector | None = None, **options: Any) -> PlanRun:
        options.setdefault("env", dict(SECRETS))
        async with LookupReader(self.settings, transport=self.transport()) as reader:
            return await make_plan(
                reader, [str(self.specs)], self.settings.state_path, selector, **options
            )

    async def apply(self, **options: Any) -> int:
        """``reconciler apply`` as the command line runs it: its output written to stdout and
        stderr (the plan and notes as they happen), its exit code returned."""
        options.setdefault("auto_approve", True)
        options.setdefault("listener", write_line)
        options.setdefault("env", dict(SECRETS))
        options.setdefault("poll", FAST_POLL)
        options.setdefault("clock", self.clock.clock())
        request = ApplyRequest(transport=self.transport(), **options)
        return emit(await run_apply(self.settings, [str(self.specs)], request))

    def client(self) -> LookupClient:
        """A client whose job polls jump the project's clock, like ``apply``'s."""
        return LookupClient(
            self.settings,
            transport=self.transport(),
            sleep=self.clock.sleep,
            clock=self.clock.monotonic,
            wall_clock=self.clock,
        )
