"""Views: every format is one module, and this is the one list of formats.

``text`` (people), ``json`` (tools), ``markdown`` (pull-request comments) and ``html`` (one
self-contained page with the lookup × domain grid) each define a function per view they offer:
``plan``, ``apply``, ``jobs``, ``history``, ``validate``, ``state``. Which formats a command accepts
is read from which modules define its view, so a new format is one new module here plus one line in
``FORMATS``. ``progress`` is apart: it shows apply's events while they happen.

The format modules are imported only to render: the command line asks which formats exist while
building ``--help``, and reading each module's top-level function names (its source, parsed) costs
a millisecond where importing them (pydantic models, rich) costs a tenth of a second.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.errors import SettingsError

FORMATS: dict[str, str] = {
    "text": "reconciler.views.text",
    "json": "reconciler.views.json",
    "markdown": "reconciler.views.markdown",
    "html": "reconciler.views.html",
}


@functools.cache
def _offered(module: str) -> frozenset[str]:
    """The top-level public functions a format module defines, read from its source."""
    spec = importlib.util.find_spec(module)
    if not (spec is not None and spec.origin is not None):
        raise RuntimeError("invariant broken: spec is not None and spec.origin is not None")
    tree = ast.parse(Path(spec.origin).read_text())
    return frozenset(
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")
    )


def formats_for(view: str) -> tuple[str, ...]:
    """The formats that can show ``view`` (e.g. ``plan`` → text, json, markdown, html)."""
    return tuple(name for name, module in FORMATS.items() if view in _offered(module))


def check_format(view: str, name: str) -> str:
    """``name`` when it can show ``view``; a usage error listing the ones that can otherwise."""
    allowed = formats_for(view)
    if name not in allowed:
        raise SettingsError(f"unknown format {name!r}", hint="one of " + ", ".join(allowed))
    return name


def renderer(view: str, name: str) -> Callable[..., str]:
    """The function of format ``name`` that renders ``view``."""
    check_format(view, name)
    function: Callable[..., str] = getattr(importlib.import_module(FORMATS[name]), view)
    return function


def render(view: str, name: str, *args: Any, **kwargs: Any) -> str:
    """Render ``view`` in format ``name``."""
    return renderer(view, name)(*args, **kwargs)


__all__ = ["FORMATS", "check_format", "formats_for", "render", "renderer"]
