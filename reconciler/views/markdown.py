"""The markdown view: a plan or drift report for a pull-request comment.

A summary table, then one collapsible diff per change.
"""

from __future__ import annotations

from reconciler.plan.model import Plan
from reconciler.views.grid import grid
from reconciler.views.text import attribute_lines, drift_line, summary_line


def plan(plan: Plan, *, drift: bool = False, **_: object) -> str:
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
            out.append(f"| `{name}` | " + " | ".join(cells) + " |")
        out.append("")
    for change in plan.actionable:
        out.append(
            f"<details><summary><code>{change.action.symbol}</code> <b>{change.address}</b> "
            f"{change.action.value}: {_escape(change.reason)}</summary>"
        )
        out.append("")
        out.append("```diff")
        for line in attribute_lines(change):
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
