"""The emulator's knobs: latencies, the habits of a less tidy service, faults, and the credentials
it accepts (``Grant``). ``RECONCILER_EMULATOR_CONFIG`` and ``emulator serve`` set them."""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Grant:
    """A credential the emulator accepts and the domains it may act in (``*``: all)."""

    token: str = ""
    api_key: str = ""
    api_secret: str = ""
    domains: list[str] = field(default_factory=lambda: ["*"])

    def allows(self, domain: str) -> bool:
        return any(fnmatch.fnmatchcase(domain, pattern) for pattern in self.domains)


@dataclass
class EmulatorConfig:
    """Every knob of the emulator. Changing it on a running app takes effect at the next request."""

    grants: list[Grant] = field(default_factory=list)  # empty: no auth at all
    known_domains: list[str] | None = None  # None: every domain exists
    deploy_config_null: bool = False  # deployConfig and lastStatus null, as documented examples
    owner: str = "reconciler@emulator"
    # Job latency per phase, seconds.
    create_latency: float = 0.1
    deploy_latency: float = 0.2
    delete_latency: float = 0.1
    # Job failures.
    job_failure_rate: float = 0.0
    job_failure_pattern: str | None = None  # fnmatch on the lookup name
    # Transport faults, as rates per request to /lookup-api.
    rate_5xx: float = 0.0
    rate_429: float = 0.0
    retry_after: float = 1.0
    rate_drop: float = 0.0
    added_latency: float = 0.0
    seed: int | None = None
    # Habits of a less tidy service (see ``habits``): how it echoes configs, and its job routes.
    rewrite_queries: bool = False  # echo queries rewritten, as Devo's own service does
    columns_with_from: bool = False  # echo every column with its ``from`` index
    empty_for_null: bool = False  # echo ``[]``/``""`` where the config holds null
    numbers_as_strings: bool = False  # echo numbers as strings
    jobs_vanish: bool = False  # a deleted lookup's jobs answer 404, like the lookup itself

    def public(self) -> dict[str, Any]:
        """The knobs without credentials (for ``GET /_emulator/config``)."""
        data = asdict(self)
        data["grants"] = len(self.grants)
        return data
