"""Checks: assertions on a live lookup (``spec.checks`` of a Lookup and of its Domain), evaluated
after apply, in every drift run and by ``reconciler check``.

A check sees the lookup as the service shows it: ``numEntries`` (a double, null when not reported),
``status`` (``deployed``, ``failed``, ``in-progress`` or ``unknown``, from the last job),
``columns`` (the live column names), ``spec`` (``columns``, ``key``, ``visibility``, ``kind`` as the
spec says), ``previous`` (``numEntries`` the last apply observed; with no record, the current one, so
a relative check passes on a first apply) and ``lookup`` (``domain``, ``name``, ``address``,
``labels``). A check that is false or cannot be evaluated fails. Pure: the caller reads the lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reconciler.client import LookupMeta
from reconciler.desired import DesiredLookup
from reconciler.plan.model import CheckResult
from reconciler.spec.policies import Expression, numbers
from reconciler.state import LookupState


def job_state(code: str | None) -> str:
    """A last job status code as a check's ``status``."""
    if not code:
        return "unknown"
    if code.endswith(".err"):
        return "failed"
    if code in ("deploy.ok", "create.ok"):
        return "deployed"
    return "in-progress"


def last_code(meta: LookupMeta) -> str | None:
    """The code of ``lastStatus`` (a status object, or a bare code), or None."""
    value = meta.lastStatus
    if isinstance(value, dict):
        code = value.get("code") or value.get("status")
        return str(code) if code else None
    return str(value) if isinstance(value, str) and value else None


def wants_status(expressions: Sequence[Expression]) -> bool:
    """True when a check reads ``status`` (then a missing ``lastStatus`` is worth a job read)."""
    return any("status" in e.variables for e in expressions)


def check_context(
    meta: LookupMeta,
    desired: DesiredLookup,
    record: LookupState | None,
    status_code: str | None,
) -> dict[str, Any]:
    """Every variable a check may read about one live lookup."""
    columns = desired.canonical.get("recipe.source.columns")
    spec_columns = (
        [c.get("name") for c in columns if isinstance(c, dict)]
        if isinstance(columns, list)
        else [f[0] for f in desired.fields or []] or desired.query_columns or []
    )
    previous = record.observed.numEntries if record is not None else None
    return {
        "numEntries": numbers(meta.numEntries),
        "status": job_state(status_code),
        "columns": [f.column for f in meta.fields],
        "spec": {
            "columns": spec_columns,
            "key": desired.canonical.get("recipe.key.column"),
            "visibility": desired.canonical.get("visibility"),
            "kind": desired.kind,
        },
        "previous": {
            "numEntries": numbers(previous if previous is not None else meta.numEntries),
        },
        "lookup": {
            "domain": desired.domain,
            "name": desired.name,
            "address": desired.address,
            "labels": dict(desired.labels),
        },
    }


def run_checks(
    expressions: Sequence[Expression], address: str, variables: Mapping[str, Any]
) -> list[CheckResult]:
    """Each check evaluated on ``variables``."""
    results = []
    for expression in expressions:
        passed, error = expression.evaluate(variables)
        shown = {k: variables[k] for k in sorted(expression.variables) if k in variables}
        results.append(
            CheckResult(
                address=address,
                expr=expression.source,
                where=expression.where,
                passed=passed,
                error=error,
                observed=shown,
            )
        )
    return results
