"""Views: every format is one module, and this is the one list of formats.

``text`` (people), ``json`` (tools), ``markdown`` (pull-request comments) and ``html`` (one
self-contained page with the lookup × domain grid) each define a function
per view they offer: ``plan``, ``apply``, ``jobs``, ``history``, ``validate``. Which formats a
command accepts is read from which modules define its view, so a new format is one new module here
plus one line in ``FORMATS``. ``progress`` is apart: it shows apply's events while they happen.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from reconciler.errors import SettingsError
from reconciler.views import html, json, markdown, text

FORMATS: dict[str, ModuleType] = {
    "text": text,
    "json": json,
    "markdown": markdown,
    "html": html,
}


def formats_for(view: str) -> tuple[str, ...]:
    """The formats that can show ``view`` (e.g. ``plan`` → text, json, markdown)."""
    return tuple(name for name, module in FORMATS.items() if hasattr(module, view))


def check_format(view: str, name: str) -> str:
    """``name`` when it can show ``view``; a usage error listing the ones that can otherwise."""
    allowed = formats_for(view)
    if name not in allowed:
        raise SettingsError(f"unknown format {name!r}", hint="one of " + ", ".join(allowed))
    return name


def renderer(view: str, name: str) -> Callable[..., str]:
    """The function of format ``name`` that renders ``view``."""
    check_format(view, name)
    function: Callable[..., str] = getattr(FORMATS[name], view)
    return function


def render(view: str, name: str, *args: Any, **kwargs: Any) -> str:
    """Render ``view`` in format ``name``."""
    return renderer(view, name)(*args, **kwargs)


__all__ = ["FORMATS", "check_format", "formats_for", "render", "renderer"]
