"""The html view: one self-contained page for a plan or drift (no script, no network at view time).

A lookup × domain grid, each cell coloured by its action and holding the change's details folded
under it (``<details>``), then the summary. Everything is escaped; the page embeds its own style.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING

from reconciler.plan.model import Action, Plan
from reconciler.views.grid import grid
from reconciler.views.text import attribute_lines, drift_line, summary_line

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.summary { font-weight: 600; margin: 0 0 16px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #d0d7de; padding: 6px 10px; vertical-align: top; text-align: left; }
th { background: #f6f8fa; }
td.create { background: #dafbe1; } td.update { background: #fff8c5; }
td.delete { background: #ffebe9; } td.noop { color: #57606a; }
td.unmanaged { background: #ddf4ff; } td.none { background: #fafbfc; }
details summary { cursor: pointer; font-weight: 600; }
pre { margin: 6px 0 0; font-size: 12px; white-space: pre-wrap; }
ul.warnings { color: #9a6700; }
"""


def plan(plan: Plan, *, color: bool = False, drift: bool = False, verbose: bool = False) -> str:
    """The page: title, summary line, the grid with details in its cells, warnings."""
    table = grid(plan, drift=drift)
    title = "reconciler drift" if drift else "reconciler plan"
    line = drift_line(plan) if drift else summary_line(plan)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="summary" id="summary">{escape(line)}</p>',
        '<table id="grid"><thead><tr><th>lookup</th>',
    ]
    out += [f"<th>{escape(domain)}</th>" for domain in table.domains]
    out.append("</tr></thead><tbody>")
    for name, row in table.rows:
        out.append(f"<tr><th>{escape(name)}</th>")
        for domain in table.domains:
            cell = row.get(domain)
            if cell is None:
                out.append('<td class="none"></td>')
                continue
            opening = (
                f'<td class="{cell.action.replace("no-op", "noop")}" '
                f'data-address="{escape(domain)}/{escape(name)}">'
            )
            change = cell.change
            details = attribute_lines(change) if change is not None else []
            if change is not None and change.reason and change.action is not Action.NOOP:
                details.insert(0, f"# {change.reason}")
            if change is not None and change.overlay:
                details.insert(0, f"# overlay {change.overlay}")
            if change is not None and change.used_by and change.action is not Action.NOOP:
                details.insert(0, f"# used by {len(change.used_by)} reference(s)")
            if details:
                body = escape("\n".join(details))
                out.append(
                    f"{opening}<details><summary>{escape(cell.word)}</summary>"
                    f"<pre>{body}</pre></details></td>"
                )
            else:
                out.append(f"{opening}{escape(cell.word)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    if plan.violations:
        out.append('<ul class="violations">')
        for v in plan.violations:
            out.append(
                f'<li class="{"blocking" if v.blocking else "advisory"}">'
                f"{escape(v.address)}: {escape(v.policy)} / {escape(v.rule)} "
                f"[{escape(v.level)}]: {escape(v.message)}</li>"
            )
        out.append("</ul>")
    if plan.warnings:
        out.append('<ul class="warnings">')
        out += [f"<li>{escape(w)}</li>" for w in plan.warnings]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


if TYPE_CHECKING:  # each view has the signature its Protocol states
    from reconciler.views import kinds

    _plan: kinds.PlanView = plan
