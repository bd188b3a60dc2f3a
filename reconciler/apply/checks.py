"""Checks around apply: before the first request, every secret a change needs is set; once a
lookup's job has ended, its ``spec.checks`` (and its Domain's) hold on what the service shows (one
GET of the lookup)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from reconciler.client import LookupClient
from reconciler.desired import DesiredLookup, placeholders
from reconciler.errors import ReconcilerError, SettingsError
from reconciler.plan.checks import check_context, last_code, run_checks
from reconciler.plan.model import Action, Change
from reconciler.spec.policies import Expression
from reconciler.state import LookupState


async def failed_checks(
    client: LookupClient,
    change: Change,
    desired: DesiredLookup,
    checks: Sequence[Expression],
    previous: LookupState | None,
    *,
    settled: bool = False,
) -> list[str]:
    """What each failing check says (empty when all pass). ``previous``: the record before this
    apply (``previous.numEntries``); ``settled``: the job was counted done at ``create.ok``."""
    try:
        meta = await client.find_lookup(change.domain, change.name)
    except ReconcilerError as exc:
        return [f"checks not run: the lookup could not be read ({exc.message})"]
    if meta is None:
        return ["checks not run: the service does not list the lookup"]
    code = last_code(meta) or ("create.ok" if settled else "deploy.ok")
    results = run_checks(checks, change.address, check_context(meta, desired, previous, code))
    return [r.describe() for r in results if not r.passed]


def check_secrets(
    changes: list[Change], desired: Mapping[str, DesiredLookup], env: Mapping[str, str]
) -> None:
    """Fail before any request when a ``${env:...}`` a change needs is not set."""
    missing: dict[str, list[str]] = {}
    for change in changes:
        want = desired.get(change.address)
        if want is None or change.action is Action.DELETE:
            continue
        for name in placeholders(want.body):
            if not env.get(name):
                missing.setdefault(name, []).append(change.address)
    if missing:
        detail = "; ".join(
            f"{name} (for {', '.join(sorted(set(a)))})" for name, a in sorted(missing.items())
        )
        raise SettingsError(
            f"environment variable(s) not set: {detail}; nothing was sent",
            hint="export them where apply runs (secrets are resolved only at apply time)",
        )
