"""The canonical form of a deploy config: flat ``path → value``, defaults filled, secrets dropped.

Both sides of a diff go through ``flatten``: the config the reconciler expects the service to derive
from a spec (``reconciler.desired``) and the ``deployConfig`` the service reports. Normalising both
the same way is what keeps plans free of perpetual diffs:

* ``visibility`` as a plain string whether it came as ``"x"`` or ``{"type": "x"}``;
* a null where Devo documents a default becomes that default (``append: false``,
  ``key: first-column``, ``contribution: add``, ``secondaryIndexes: none``, ``lookupType: normal``);
* column types upper-case; queries without surrounding white space;
* what services spell differently for "nothing" is nothing: ``[]``, ``""`` and ``{}`` leaves are null,
  and a column's ``from`` that equals its position is dropped (it is the position anyway);
* numbers and booleans that arrive as strings (``"300000"``, ``"true"``) are numbers and booleans
  at the paths Devo documents as such;
* ``accessKey``/``secretKey`` never appear (the service masks them; they cannot be compared).

A path the live config does not have at all is *unverified*, not different (see ``plan.builder``).
"""

from __future__ import annotations

import json
from typing import Any

SECRET_KEYS = frozenset({"accessKey", "secretKey"})

# A null (or missing) object where Devo documents a default object.
_DEFAULT_OBJECTS: dict[str, dict[str, Any]] = {
    "key": {"type": "first-column"},
    "contribution": {"type": "add"},
    "secondaryIndexes": {"type": "none"},
    "lookupType": {"type": "normal"},
}
# A null leaf where Devo documents a default value.
_DEFAULT_VALUES: dict[str, Any] = {
    "notifyStatus": False,
    "recipe.append": False,
    "recipe.requiresDate": False,
    "recipe.source.hasHeader": False,
    "recipe.source.skipEmptyLines": False,
}
# Leaf names Devo documents as numbers or booleans; some services echo them as strings.
_NUMBERS = frozenset({"refreshMillis", "startMillis", "windowMillis", "instant", "port", "from"})
_BOOLEANS = frozenset(
    {
        "append",
        "hasHeader",
        "skipEmptyLines",
        "requiresDate",
        "notifyStatus",
        "transferOwnership",
        "keepHistory",
    }
)
# Paths the service owns or derives on its own: never compared.
SERVER_OWNED = frozenset({"id.creator", "id.name"})


def visibility_of(value: Any) -> str | None:
    """``"creator-only"`` from either ``"creator-only"`` or ``{"type": "creator-only"}``."""
    if isinstance(value, dict):
        value = value.get("type")
    return str(value) if value else None


def flatten(config: dict[str, Any] | None) -> dict[str, Any]:
    """The canonical flat form of a deploy config (empty for None)."""
    if not config:
        return {}
    flat: dict[str, Any] = {}
    if "visibility" in config:
        flat["visibility"] = visibility_of(config["visibility"]) or "creator-only"
    if "notifyStatus" in config:
        flat["notifyStatus"] = _scalar("notifyStatus", config["notifyStatus"])
    if "id" in config and isinstance(config["id"], dict):
        _walk(config["id"], "id", flat)
    recipe = config.get("recipe")
    if isinstance(recipe, dict):
        recipe = dict(recipe)
        for name, default in _DEFAULT_OBJECTS.items():
            if name in recipe and not recipe[name]:
                recipe[name] = dict(default)
        source = recipe.get("source")
        if isinstance(source, dict):
            recipe["source"] = _source(source)
        _walk(recipe, "recipe", flat)
    for path, default in _DEFAULT_VALUES.items():
        if path in flat and flat[path] is None:
            flat[path] = default
    return flat


def _source(source: dict[str, Any]) -> dict[str, Any]:
    out = dict(source)
    if isinstance(out.get("query"), str):
        out["query"] = out["query"].strip()
    if isinstance(out.get("columns"), list):
        out["columns"] = [_column(i, c) for i, c in enumerate(out["columns"])]
    if out.get("query") and not out.get("columns"):
        # A query source has no CSV options; servers differ in echoing them as nulls.
        for name in ("columns", "fileProvider", "skipPreface", "hasHeader", "skipEmptyLines"):
            out.pop(name, None)
    return out


def _column(position: int, column: Any) -> Any:
    if not isinstance(column, dict):
        return column
    out = {"name": column.get("name"), "type": str(column.get("type") or "STRING").upper()}
    origin = _scalar("from", column.get("from"))
    if origin is not None and origin != position:
        out["from"] = origin
    return out


def _scalar(key: str, value: Any) -> Any:
    """One leaf in canonical form: empty is null; documented numbers and booleans are typed."""
    if isinstance(value, str):
        if not value:
            return None
        if key in _NUMBERS:
            text = value.strip()
            if text.lstrip("-").isdigit():
                return int(text)
        elif key in _BOOLEANS:
            text = value.strip().lower()
            if text in ("true", "false"):
                return text == "true"
        return value
    if isinstance(value, (list, dict)) and not value:
        return None
    return value


_TYPED = _NUMBERS | _BOOLEANS


def _walk(node: dict[str, Any], prefix: str, flat: dict[str, Any]) -> None:
    for key, value in node.items():
        if key in SECRET_KEYS:
            continue
        path = f"{prefix}.{key}"
        # Most leaves are already canonical (null, a boolean, an integer, text that is neither
        # empty nor a documented number or boolean): stored as they are, without a call of
        # _scalar each (a tenth of a 10,000-lookup plan is this walk).
        if (
            value is None
            or value is True
            or value is False
            or type(value) is int
            or (type(value) is str and value and key not in _TYPED)
        ):
            flat[path] = value
        elif isinstance(value, dict) and value and key != "map":
            _walk(value, path, flat)
        else:
            flat[path] = _scalar(key, value)


def render_value(value: Any) -> str:
    """A compact, stable text form of a canonical value for plans and diffs."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(c, dict) and "name" in c for c in value)
    ):
        return "[" + ", ".join(f"{c['name']}:{c.get('type', '')}" for c in value) + "]"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
