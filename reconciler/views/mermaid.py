"""Mermaid: the lookups and their users as a graph, for the README or a pull request.

Node labels come from specs and file paths (a pull request chooses them), so every character
outside a small safe set is written as Mermaid's ``#NNN;`` entity: no label can close its quotes,
start a new statement or carry a backtick out of the fenced block it is shown in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from reconciler.spec.references import RefsReport

_SAFE_RE = re.compile(r"[^A-Za-z0-9_./ :-]")


def _label(text: str) -> str:
    return _SAFE_RE.sub(lambda m: f"#{ord(m.group())};", text)


def graph(edges: Iterable[tuple[str, str, str | None]], highlight: Iterable[str] = ()) -> str:
    """``graph LR`` with an arrow from each user to the lookup it reads (labelled with the column
    read); ``highlight``ed nodes (the lookups a plan changes) are drawn bold."""
    ids: dict[str, str] = {}
    lines = ["graph LR"]

    def node(name: str) -> str:
        if name not in ids:
            ids[name] = f"n{len(ids)}"
            lines.append(f'  {ids[name]}["{_label(name)}"]')
        return ids[name]

    arrows = []
    for user, used, column in sorted(edges, key=lambda e: (e[1], e[0], e[2] or "")):
        source, target = node(user), node(used)
        arrows.append(
            f"  {source} -->|{_label(column)}| {target}" if column else f"  {source} --> {target}"
        )
    lines.extend(arrows)
    marked = [ids[name] for name in highlight if name in ids]
    if marked:
        lines.append("  classDef changed stroke-width:3px")
        lines.append(f"  class {','.join(marked)} changed")
    return "\n".join(lines)


def refs(report: RefsReport) -> str:
    """``reconciler refs --format mermaid``: the whole graph (or the part around ADDRESS)."""
    return graph(report.edges())


if TYPE_CHECKING:  # each view has the signature its Protocol states
    from reconciler.views import kinds

    _refs: kinds.RefsView = refs
