"""The emulator's side of deploy bodies: validate them as Devo does and derive the deploy config.

This is the *server's* derivation, written apart from the reconciler's desired-state code on purpose:
the two play the roles of independent implementations, so a disagreement shows up in tests as a
perpetual diff instead of being hidden by shared code. Errors carry Devo's own messages.
"""

from __future__ import annotations

import re
import time
from typing import Any

from reconciler.emulator.values import TYPES, duration_ms, iso_millis

COLUMN_TYPES = tuple(TYPES)

KEY_TYPES = ("first-column", "column", "row-hash", "col-hash", "seq")
MASK = "****"
DEFAULT_REFRESH_MS = 300_000


class BodyError(Exception):
    """A deploy body Devo would answer 400 to; the message is Devo's."""


def _require(body: dict[str, Any], name: str) -> Any:
    if body.get(name) in (None, "", []):
        raise BodyError(f"Field '{name}' is required")
    return body[name]


def _text(value: Any, name: str, *, optional: bool = False) -> Any:
    """``value`` when it is a string (or None, if ``optional``): a number or an object where
    Devo's model has a string is a 400 there, never something stored to fail a later read."""
    if optional and value is None or isinstance(value, str):
        return value
    raise BodyError(f"Field '{name}' must be a string")


def _visibility(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("type")
    if value in (None, ""):
        return "creator-only"
    if value not in ("creator-only", "all-subdomains"):
        raise BodyError("Visibility values can be 'creator-only' and 'all-subdomains'")
    return str(value)


def _key(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "first-column"}
    if not isinstance(value, dict) or value.get("type", "first-column") not in KEY_TYPES:
        raise BodyError(
            "KeyAlgorithm values can be 'first-column', 'column', 'row-hash', 'col-hash' and 'seq'"
        )
    key: dict[str, Any] = {"type": value.get("type", "first-column")}
    if key["type"] == "column":
        if not value.get("column"):
            raise BodyError("Key 'column' requires the field 'column'")
        key["column"] = _text(value["column"], "key.column")
    if key["type"] == "col-hash":
        if not value.get("columns"):
            raise BodyError("Key 'col-hash' requires the field 'columns'")
        if not isinstance(value["columns"], list):
            raise BodyError("Field 'key.columns' must be a list")
        key["columns"] = [_text(c, "key.columns") for c in value["columns"]]
    return key


def _columns(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BodyError("Field 'columns' is required")
    columns = []
    for column in value:
        if not isinstance(column, dict) or not column.get("name"):
            raise BodyError("Every column needs a 'name'")
        column_type = str(column.get("type", "STRING")).upper()
        if column_type not in COLUMN_TYPES:
            raise BodyError("Column type values can be " + ", ".join(COLUMN_TYPES))
        out: dict[str, Any] = {"name": _text(column["name"], "columns.name"), "type": column_type}
        if column.get("from") is not None:
            out["from"] = _text(column["from"], "columns.from")
        columns.append(out)
    return columns


def _file_provider(value: Any, *, required: bool) -> dict[str, Any] | None:
    if value is None:
        if required:
            raise BodyError("Field 'fileProvider' is required")
        return None
    if not isinstance(value, dict):
        raise BodyError("Field 'fileProvider' must be an object")
    for name in ("bucketName", "keyName"):
        if not value.get(name):
            raise BodyError(f"Field 'fileProvider.{name}' is required")
    if "transferOwnership" not in value:
        raise BodyError("Field 'fileProvider.transferOwnership' is required")
    provider = {k: v for k, v in value.items() if v is not None}
    for secret in ("accessKey", "secretKey"):
        if provider.get(secret):
            provider[secret] = MASK  # never stored: the emulator's database is a file on disk
    return provider


def _refresh(value: Any, query: str) -> int:
    if value in (None, ""):
        every = re.search(r"\bevery\s+(\d+(?:ms|s|m|h|d|w))", query)
        return duration_ms(every.group(1)) if every else DEFAULT_REFRESH_MS
    try:
        millis = duration_ms(str(value))
    except ValueError:
        raise BodyError(f"refreshPeriod '{value}' is not a valid duration") from None
    if millis < 60_000:
        raise BodyError("refreshPeriod should be bigger than 1 minute")
    return millis


def _start(value: Any, now_ms: int) -> int:
    if value in (None, ""):
        return now_ms
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    try:
        return iso_millis(str(value))
    except ValueError:
        raise BodyError(f"startDate '{value}' is not a valid date") from None


def _recipe(**fields: Any) -> dict[str, Any]:
    recipe: dict[str, Any] = {
        "recipeType": "once",
        "source": None,
        "lookupType": {"type": "normal"},
        "append": False,
        "key": {"type": "first-column"},
        "columnFilter": None,
        "contribution": {"type": "add"},
        "secondaryIndexes": {"type": "none"},
        "refreshMillis": None,
        "startMillis": None,
        "requiresDate": False,
    }
    recipe.update(fields)
    return recipe


def _csv_source(body: dict[str, Any], *, provider_required: bool) -> dict[str, Any]:
    return {
        "columns": _columns(body.get("columns")),
        "fileProvider": _file_provider(body.get("fileProvider"), required=provider_required),
        "skipPreface": _pattern(body.get("skipPreface")),
        "hasHeader": bool(body.get("hasHeader", False)),
        "skipEmptyLines": bool(body.get("skipEmptyLines", False)),
    }


def _pattern(value: Any) -> str | None:
    """``skipPreface``: a regular expression the upload's first lines are matched with."""
    text: str | None = _text(value, "skipPreface", optional=True)
    if text:
        try:
            re.compile(text)
        except re.error as exc:
            raise BodyError(f"skipPreface is not a valid regular expression: {exc}") from None
    return text


def _contribution(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "add"}
    if not isinstance(value, dict) or value.get("type", "add") not in ("add", "del", "col"):
        raise BodyError("Contribution values can be 'add', 'del' and 'col'")
    out = {"type": value.get("type", "add")}
    if out["type"] == "col":
        if not value.get("name"):
            raise BodyError("Contribution 'col' requires the field 'name'")
        out["name"] = _text(value["name"], "contribution.name")
    return out


def _history(keep: bool, column: str | None) -> dict[str, Any]:
    if not keep:
        return {"type": "normal"}
    if column:
        return {"type": "historic", "instantPolicy": "column", "columnName": column}
    return {"type": "historic", "instantPolicy": "natural"}


def derive(
    endpoint: str, domain: str, name: str, body: dict[str, Any], *, uploaded: bool = False
) -> dict[str, Any]:
    """The full ``lookupDeployConfig`` Devo derives from a deploy body (defaults filled in)."""
    now_ms = time.time_ns() // 1_000_000
    if not isinstance(body, dict):
        raise BodyError("Request body must be a JSON object")
    notify = bool(body.get("notifyStatus", False))
    if endpoint == "deploy-config":
        recipe = _full_recipe(_require(body, "recipe"))
        ident = body.get("id") or {}
        if ident and (ident.get("creator", domain) != domain or ident.get("name", name) != name):
            raise BodyError("The id of the body does not match the lookup of the path")
    elif endpoint == "deploy-csv":
        recipe = _recipe(
            source=_csv_source(body, provider_required=not uploaded),
            key=_key(body.get("key")),
            contribution=_contribution(body.get("contribution")),
            append=bool(body.get("append", False)),
        )
    elif endpoint == "deploy-static-query":
        query = _text(_require(body, "query"), "query")
        recipe = _recipe(
            source={"query": query},
            key=_key(body.get("key")),
            append=bool(body.get("append", False)),
            lookupType=_history(
                bool(body.get("keepHistory")),
                _text(body.get("columnTimeReference"), "columnTimeReference", optional=True),
            ),
        )
    elif endpoint == "deploy-periodic-query":
        query = _text(_require(body, "query"), "query")
        recipe = _recipe(
            recipeType="periodic",
            source={"query": query},
            key=_key(body.get("key")),
            append=bool(body.get("append", False)),
            lookupType=_history(bool(body.get("keepHistory")), None),
            refreshMillis=_refresh(body.get("refreshPeriod"), query),
            startMillis=_start(body.get("startDate"), now_ms),
            requiresDate=True,
        )
    elif endpoint == "deploy-sliding-window-query":
        query = _text(_require(body, "query"), "query")
        window = _require(body, "windowSize")
        try:
            window_ms = duration_ms(str(window))
        except ValueError:
            raise BodyError(f"windowSize '{window}' is not a valid duration") from None
        recipe = _recipe(
            recipeType="periodic",
            source={"query": query},
            key=_key(body.get("key")),
            refreshMillis=_refresh(body.get("refreshPeriod"), query),
            startMillis=_start(body.get("startDate"), now_ms),
            requiresDate=True,
            windowMillis=window_ms,
        )
    else:  # pragma: no cover - routes only call known endpoints
        raise BodyError(f"Unknown endpoint {endpoint}")
    return {
        "id": {"creator": domain, "name": name},
        "visibility": {"type": _visibility(body.get("visibility"))},
        "recipe": recipe,
        "notifyStatus": notify,
    }


def _full_recipe(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BodyError("Field 'recipe' must be an object")
    recipe_type = value.get("recipeType")
    if recipe_type not in ("once", "periodic"):
        raise BodyError("RecipeType values can be 'once' and 'periodic'")
    source = value.get("source")
    if not isinstance(source, dict):
        raise BodyError("Field 'recipe.source' is required")
    if source.get("query"):
        derived_source: dict[str, Any] = {"query": _text(source["query"], "recipe.source.query")}
    else:
        derived_source = _csv_source(source, provider_required=True)
    lookup_type = value.get("lookupType") or {"type": "normal"}
    if not isinstance(lookup_type, dict) or lookup_type.get("type", "normal") not in (
        "normal",
        "historic",
    ):
        raise BodyError("LookupType values can be 'normal' and 'historic'")
    recipe = _recipe(
        recipeType=recipe_type,
        source=derived_source,
        lookupType={k: v for k, v in lookup_type.items() if v is not None},
        append=bool(value.get("append", False)),
        key=_key(value.get("key")),
        columnFilter=value.get("columnFilter"),
        contribution=_contribution(value.get("contribution")),
        secondaryIndexes=value.get("secondaryIndexes") or {"type": "none"},
        requiresDate=bool(value.get("requiresDate", False)),
    )
    if recipe_type == "periodic":
        for name in ("refreshMillis", "startMillis"):
            if value.get(name) is None:
                raise BodyError(f"Field 'recipe.{name}' is required for periodic recipes")
        if int(value["refreshMillis"]) < 60_000:
            raise BodyError("refreshPeriod should be bigger than 1 minute")
        recipe["refreshMillis"] = int(value["refreshMillis"])
        recipe["startMillis"] = int(value["startMillis"])
    return recipe
