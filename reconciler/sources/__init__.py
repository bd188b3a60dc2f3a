"""Source kinds: one module per spec source block, registered in one table (``KINDS``).

A source kind is everything the tool knows about one of Devo's deploy endpoints: the spec block's
pydantic model, the endpoint, how a block expands into the request body and into the deploy config
the service is expected to echo, and which block ``import`` writes for a live lookup. Adding a kind
is one new module here and one line in ``_MODULES``; the spec language, the plan, apply and import
all read this table. (The emulator keeps its own, independent reading of the endpoints on purpose.)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from reconciler.sources import (
    csv,
    periodic_query,
    recipe,
    sliding_window_query,
    static_query,
)
from reconciler.sources._shared import (
    Column,
    Contribution,
    Expansion,
    FileProvider,
    Key,
    KeyType,
    LookupType,
    SecondaryIndexes,
    SourceKind,
    Strict,
    key_positions,
    suggest,
)

# The table. Order matters: ``import``
# tries the kinds in this order and keeps the first whose expansion reproduces the live config (so
# the most specific kinds come first and ``recipe``, which holds anything, comes last).
_MODULES: tuple[ModuleType, ...] = (
    static_query,
    periodic_query,
    sliding_window_query,
    csv,
    recipe,
)
KINDS: dict[str, SourceKind] = {module.KIND.name: module.KIND for module in _MODULES}
ENDPOINTS: dict[str, str] = {kind.name: kind.endpoint for kind in KINDS.values()}


def expand(
    kind: str, block: Any, visibility: str, notify_status: bool | None
) -> tuple[dict[str, Any], dict[str, Any], set[str]]:
    """(request body, expected nested deploy config, ignored paths) of one source block."""
    source = KINDS[kind]
    result = source.expand(block, visibility, notify_status)
    config = {
        "visibility": {"type": visibility},
        "recipe": result.recipe,
        "notifyStatus": result.notify_status,
    }
    ignore = set(result.ignore)
    if source.endpoint != "deploy-config":
        ignore.add("notifyStatus")  # only deploy-config bodies carry it
    return result.body, config, ignore


__all__ = [
    "suggest",
    "ENDPOINTS",
    "KINDS",
    "Column",
    "Contribution",
    "Expansion",
    "FileProvider",
    "Key",
    "KeyType",
    "LookupType",
    "SecondaryIndexes",
    "SourceKind",
    "Strict",
    "expand",
    "key_positions",
]
