"""Views: every format is one module, and this is the one list of formats and what they show.

``text`` (people), ``json`` (tools), ``markdown`` (pull-request comments), ``html`` (one
self-contained page with the lookup × domain grid) and ``mermaid`` (the reference graph) each
define a function per view they offer: ``plan``, ``apply``, ``jobs``, ``history``, ``validate``,
``state``, ``refs``, ``checks``. ``OFFERS`` says which views each
format offers (a test checks it against the modules), so building ``--help`` imports no format
module; ``renderer`` imports the one asked for when something is rendered. A new format is one
new module here, one entry in ``OFFERS`` and one branch in ``_module``. ``progress`` is apart: it
shows apply's events while they happen.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from reconciler.errors import SettingsError

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


def renderer(view: str, name: str) -> Callable[..., str]:
    """The function of format ``name`` that renders ``view``."""
    check_format(view, name)
    function: Callable[..., str] = getattr(_module(name), view)
    return function


def render(view: str, name: str, *args: Any, **kwargs: Any) -> str:
    """Render ``view`` in format ``name``."""
    return renderer(view, name)(*args, **kwargs)


__all__ = ["FORMATS", "OFFERS", "VIEWS", "check_format", "formats_for", "render", "renderer"]
