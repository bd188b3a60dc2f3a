"""Views: every format is one module, and this is the one list of formats and what they show.

``text`` (people), ``json`` (tools), ``markdown`` (pull-request comments), ``html`` (one
self-contained page with the lookup × domain grid) and ``mermaid`` (the reference graph) each
define a function per view they offer: ``plan``, ``apply``, ``jobs``, ``history``, ``validate``,
``state``, ``refs``, ``checks``. ``OFFERS`` says which views each
format offers (a test checks it against the modules), so building ``--help`` imports no format
module. Each view has a typed Protocol (``views.kinds``) that every format's function for it
meets (mypy checks it at the end of each format module), and a typed factory here
(``plan_view(name)``...) imports the format asked for when something is shown. A new format is
one new module here, one entry in ``OFFERS`` and one branch in ``_module``. A format that shows
apply also shows its events while they happen: its ``console`` (``apply_console(name)``).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from reconciler.errors import SettingsError
from reconciler.views.kinds import (
    ApplyView,
    ChecksView,
    ConsoleFactory,
    HistoryView,
    JobsView,
    PlanView,
    RefsView,
    StateView,
    ValidateView,
)

if TYPE_CHECKING:
    from reconciler.apply.outcome import ApplyConsole

#: Every view a command shows.
VIEWS = ("plan", "apply", "jobs", "history", "validate", "state", "refs", "checks")
#: Each format and the views it offers, in the order ``--format`` lists them.
OFFERS: dict[str, frozenset[str]] = {
    "text": frozenset(VIEWS),
    "json": frozenset(VIEWS),
    "markdown": frozenset({"plan"}),
    "html": frozenset({"plan"}),
    "mermaid": frozenset({"refs"}),
}
FORMATS = tuple(OFFERS)


def formats_for(view: str) -> tuple[str, ...]:
    """The formats that can show ``view`` (e.g. ``plan`` → text, json, markdown, html)."""
    return tuple(name for name, views in OFFERS.items() if view in views)


def check_format(view: str, name: str) -> str:
    """``name`` when it can show ``view``; a usage error listing the ones that can otherwise."""
    allowed = formats_for(view)
    if name not in allowed:
        raise SettingsError(f"unknown format {name!r}", hint="one of " + ", ".join(allowed))
    return name


def _module(name: str) -> ModuleType:
    """The module of format ``name``, imported now (rich, pydantic models: not at start-up)."""
    if name == "text":
        from reconciler.views import text

        return text
    if name == "json":
        from reconciler.views import json

        return json
    if name == "markdown":
        from reconciler.views import markdown

        return markdown
    if name == "html":
        from reconciler.views import html

        return html
    if name == "mermaid":
        from reconciler.views import mermaid

        return mermaid
    raise SettingsError(f"unknown format {name!r}", hint="one of " + ", ".join(FORMATS))


def _function(view: str, name: str) -> Any:
    """The function of format ``name`` for ``view`` (a usage error when it offers none)."""
    check_format(view, name)
    return getattr(_module(name), view)


# One typed factory per view: callers get a function whose signature mypy knows.


def plan_view(name: str) -> PlanView:
    """``--format name``'s plan view."""
    view: PlanView = _function("plan", name)
    return view


def apply_view(name: str) -> ApplyView:
    """``--format name``'s apply view."""
    view: ApplyView = _function("apply", name)
    return view


def jobs_view(name: str) -> JobsView:
    """``--format name``'s jobs view."""
    view: JobsView = _function("jobs", name)
    return view


def history_view(name: str) -> HistoryView:
    """``--format name``'s history view."""
    view: HistoryView = _function("history", name)
    return view


def validate_view(name: str) -> ValidateView:
    """``--format name``'s validate view."""
    view: ValidateView = _function("validate", name)
    return view


def state_view(name: str) -> StateView:
    """``--format name``'s state view."""
    view: StateView = _function("state", name)
    return view


def refs_view(name: str) -> RefsView:
    """``--format name``'s refs view."""
    view: RefsView = _function("refs", name)
    return view


def apply_console(name: str, *, interactive: bool, total: int) -> ApplyConsole:
    """``--format name``'s live progress of apply (text: a bar on a terminal, else lines)."""
    check_format("apply", name)
    factory: ConsoleFactory = _module(name).console
    return factory(interactive=interactive, total=total)


def checks_view(name: str) -> ChecksView:
    """``--format name``'s checks view."""
    view: ChecksView = _function("checks", name)
    return view


__all__ = [
    "FORMATS",
    "OFFERS",
    "VIEWS",
    "apply_console",
    "apply_view",
    "check_format",
    "checks_view",
    "formats_for",
    "history_view",
    "jobs_view",
    "plan_view",
    "refs_view",
    "state_view",
    "validate_view",
]
