"""The markdown view: a plan or drift report for a pull-request comment.

A summary table, then one collapsible diff per change.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from reconciler.errors import printable
from reconciler.plan.model import Action, Plan
from reconciler.views import mermaid
from reconciler.views.grid import grid
from reconciler.views.text import attribute_lines, drift_line, summary_line


def plan(plan: Plan, *, color: bool = False, drift: bool = False, verbose: bool = False) -> str:
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
    table = grid(plan, drift=drift)
    if table.worth_showing:
        out.append("| lookup | " + " | ".join(table.domains) + " |")
        out.append("|---|" + "---|" * len(table.domains))
        for name, row in table.rows:
            cells = [row[d].word if d in row else "" for d in table.domains]
            out.append(f"| {_code(name)} | " + " | ".join(cells) + " |")
        out.append("")
    for change in plan.actionable:
        out.append(
            f"<details><summary><code>{change.action.symbol}</code> "
            f"<b>{_escape(change.address)}</b> {change.action.value}: {_escape(change.reason)}"
            "</summary>"
        )
        out.append("")
        lines = [
            line if line[0] in "+-" else ("!" + line[1:] if line[0] == "~" else "#" + line[1:])
            for line in (printable(line, one_line=True) for line in attribute_lines(change))
        ]
        if change.used_by:
            lines.insert(0, f"# used by {len(change.used_by)} reference(s)")
        if change.depends_on:
            lines.insert(0, f"# starts after: {', '.join(change.depends_on)}")
        fence = _fence(lines)
        out.append(fence + "diff")
        out.extend(lines)
        out.append(fence)
        out.append("</details>")
        out.append("")
    affected = _affected_graph(plan)
    if affected:
        out.append("<details><summary>Lookups this plan changes and what uses them</summary>")
        out.append("")
        out.append("```mermaid")
        out.append(affected)
        out.append("```")
        out.append("</details>")
        out.append("")
    if plan.unmanaged:
        out.append("**Unmanaged:** " + ", ".join(_code(a) for a in plan.unmanaged))
        out.append("")
    if plan.violations:
        out.append("**Policy violations**")
        out.append("")
        out.append("| | lookup | policy | rule | level | message |")
        out.append("|---|---|---|---|---|---|")
        for v in plan.violations:
            out.append(
                f"| {'❌' if v.blocking else '⚠️'} | {_code(v.address)} | {_escape(v.policy)} | "
                f"{_escape(v.rule)} | {v.level} | {_escape(v.message)} |"
            )
        out.append("")
    if plan.failed_checks:
        out.append("**Failed checks**")
        out.append("")
        out.extend(f"- ❌ {_code(c.address)}: {_escape(c.describe())}" for c in plan.failed_checks)
        out.append("")
    for warning in plan.warnings:
        out.append(f"> ⚠️ {_escape(warning)}")
    return "\n".join(out).rstrip() + "\n"


def _affected_graph(plan: Plan) -> str | None:
    """The part of the reference graph a plan touches: the changed lookups, their users and what
    they read (Mermaid), or None when no changed lookup has any."""
    edges: dict[tuple[str, str, str | None], None] = {}
    changed = plan.actionable
    for change in changed:
        for use in change.used_by:
            edges.setdefault((use.user or use.where.rsplit(":", 1)[0], change.address, use.column))
        for first in change.depends_on:
            if change.action is not Action.DELETE:
                edges.setdefault((change.address, first, None))
    if not edges:
        return None
    return mermaid.graph(edges, highlight=[c.address for c in changed])


def _escape(text: str) -> str:
    """Text for a line of HTML or a table cell: one line, no tag, no cell break."""
    return (
        printable(text, one_line=True)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
    )


def _code(text: str) -> str:
    """A code span that no backtick in ``text`` can close early (CommonMark: a span opened by N
    backticks ends only at a run of exactly N), on one line, safe inside a table cell."""
    text = printable(text, one_line=True).replace("|", "\\|")
    ticks = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _fence(lines: list[str]) -> str:
    """A code fence longer than any backtick run in ``lines``: a cell holding a line of three
    backticks cannot close it and go on as markdown."""
    longest = max((len(run) for line in lines for run in re.findall("`+", line)), default=0)
    return "`" * max(3, longest + 1)


if TYPE_CHECKING:  # each view has the signature its Protocol states
    from reconciler.views import kinds

    _plan: kinds.PlanView = plan
