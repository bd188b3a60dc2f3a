"""Views of a plan: text (like Terraform's), JSON (the contract's), Markdown (for a PR comment).

Each view is a pure function of the plan; the CLI chooses one. ``drift=True`` frames the same plan
as drift (what differs in Devo from git) instead of as actions to take.
"""

from __future__ import annotations

import json
from typing import Any

from reconciler.canonical import render_value
from reconciler.plan.model import Action, Change, Plan

_COLORS = {Action.CREATE: "32", Action.UPDATE: "33", Action.DELETE: "31", Action.NOOP: "0"}
_HEADLINE = {
    Action.CREATE: "will be created",
    Action.UPDATE: "will be updated in-place",
    Action.DELETE: "will be destroyed",
    Action.NOOP: "is up to date",
}
_ORIGIN = {
    "spec": " (spec changed since the last apply)",
    "state": " (recorded only; nothing is sent for it)",
}
_DRIFT = {
    Action.CREATE: "is missing in Devo",
    Action.UPDATE: "differs from its spec",
    Action.DELETE: "should not exist",
}


def _unverified_note(plan: Plan) -> str:
    count = len(plan.unverified)
    if not count:
        return ""
    return f" {count} lookup(s) could not be verified (no deployConfig from the service, no state)."


def summary_line(plan: Plan) -> str:
    """The contract's last line: ``Plan: X to add, Y to change, Z to destroy.`` or ``No changes.``

    When some lookups could not be verified, the line says how many after the contract's words.
    """
    if not plan.can_apply():
        return "No changes." + _unverified_note(plan)
    s = plan.summary
    return (
        f"Plan: {s['add']} to add, {s['change']} to change, {s['destroy']} to destroy."
        + _unverified_note(plan)
    )


def drift_line(plan: Plan) -> str:
    """``In sync.`` or ``Drift: N lookup(s) differ, M unmanaged.`` (kept ones are not drift)."""
    kept = f" ({len(plan.kept)} kept by keep globs)" if plan.kept else ""
    if plan.in_sync:
        note = f" {len(plan.kept)} unmanaged lookup(s) kept by keep globs (not drift)."
        return "In sync." + (note if plan.kept else "") + _unverified_note(plan)
    return (
        f"Drift: {len(plan.actionable)} lookup(s) differ, "
        f"{len(plan.drifted_unmanaged)} unmanaged.{kept}" + _unverified_note(plan)
    )


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color and code != "0" else text


def _attribute_lines(change: Change) -> list[str]:
    lines = []
    if change.action is Action.CREATE and change.after:
        for path, value in sorted(change.after.items()):
            lines.append(f"+ {path} = {render_value(value)}")
    for item in change.diff:
        origin = _ORIGIN.get(item.source, "")
        lines.append(
            f"~ {item.path}: {render_value(item.before)} → {render_value(item.after)}{origin}"
        )
        lines.extend(f"    {detail}" for detail in item.details)
    if change.csv is not None:
        csv = change.csv
        rows = f"{csv.before_rows if csv.before_rows is not None else '?'} → {csv.after_rows} rows"
        detail = ""
        if csv.added is not None:
            detail = f" (+{csv.added} -{csv.removed} ~{csv.changed} by key)"
        what = (
            "csv content" if csv.source == "spec" else "data in Devo (changed outside reconciler)"
        )
        lines.append(f"~ {what}: {rows}{detail}")
        lines.extend(f"    {sample}" for sample in csv.samples)
        if csv.send_bytes is not None:
            lines.append(
                f"# upload: {csv.strategy}, {csv.send_rows} row(s), {_size(csv.send_bytes)}"
            )
        if csv.note:
            lines.append(f"# {csv.note}")
    if change.unverified and change.action is not Action.CREATE:
        lines.append(f"? could not verify: {', '.join(change.unverified)}")
    return lines


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def render_text(
    plan: Plan, *, color: bool = False, drift: bool = False, verbose: bool = False
) -> str:
    """The human view. ``verbose`` also lists lookups that are up to date."""
    out: list[str] = []
    shown = [c for c in plan.changes if verbose or c.action is not Action.NOOP]
    if shown:
        out.append(
            "Devo differs from the specs:"
            if drift
            else "reconciler will perform the following actions:"
        )
        out.append("")
    for change in shown:
        code = _COLORS[change.action]
        headline = (_DRIFT if drift else _HEADLINE).get(change.action, _HEADLINE[change.action])
        reason = f" ({change.reason})" if change.reason and change.action is not Action.NOOP else ""
        out.append(f"  # {change.address} {headline}{reason}")
        kind = f" ({change.kind} → {change.endpoint})" if change.kind else ""
        out.append(_paint(f'  {change.action.symbol} lookup "{change.address}"{kind}', code, color))
        for line in _attribute_lines(change):
            out.append(_paint(f"      {line}", code if line[0] in "+~-" else "0", color))
        out.append("")
    if plan.unmanaged:
        kept = set(plan.kept)
        out.append("Unmanaged lookups (no spec names them):")
        out.extend(
            f"  ? {address}" + (" (kept)" if address in kept else "") for address in plan.unmanaged
        )
        out.extend(f"  hint: {hint}" for hint in plan.hints)
        out.append("")
    for warning in plan.warnings:
        out.append(_paint(f"Warning: {warning}", "33", color))
    if plan.warnings:
        out.append("")
    out.append(drift_line(plan) if drift else summary_line(plan))
    return "\n".join(out)


def render_json(plan: Plan, *, drift: bool = False) -> str:
    """The contract's plan JSON (drift adds ``in_sync``)."""
    document: dict[str, Any] = plan.to_json()
    if drift:
        document["in_sync"] = plan.in_sync
    return json.dumps(document, indent=2, sort_keys=False)


def render_markdown(plan: Plan, *, drift: bool = False) -> str:
    """A pull-request comment: a summary table, then one collapsible diff per change."""
    title = "### reconciler drift" if drift else "### reconciler plan"
    s = plan.summary
    out = [
        title,
        "",
        f"**{drift_line(plan) if drift else summary_line(plan)}**",
        "",
        "| add | change | destroy | unchanged | unmanaged |",
        "|---:|---:|---:|---:|---:|",
        f"| {s['add']} | {s['change']} | {s['destroy']} | {s['unchanged']} | {len(plan.unmanaged)} |",
        "",
    ]
    for change in plan.actionable:
        out.append(
            f"<details><summary><code>{change.action.symbol}</code> <b>{change.address}</b> "
            f"{change.action.value}: {_escape(change.reason)}</summary>"
        )
        out.append("")
        out.append("```diff")
        for line in _attribute_lines(change):
            out.append(
                line if line[0] in "+-" else ("!" + line[1:] if line[0] == "~" else "#" + line[1:])
            )
        out.append("```")
        out.append("</details>")
        out.append("")
    if plan.unmanaged:
        out.append("**Unmanaged:** " + ", ".join(f"`{a}`" for a in plan.unmanaged))
        out.append("")
    for warning in plan.warnings:
        out.append(f"> ⚠️ {_escape(warning)}")
    return "\n".join(out).rstrip() + "\n"


def _escape(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
