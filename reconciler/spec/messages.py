"""pydantic's validation errors in words a person can act on: located by field, with a hint (a
did-you-mean for an unknown field or value, the allowed fields, the safe-name rule)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from reconciler.errors import Diagnostic
from reconciler.spec.model import SECRET_FIELDS


class Locating(Protocol):
    """What locates a finding in a document (``LoadedDocument``): a field's path to a Diagnostic."""

    def diagnostic(
        self,
        loc: Iterable[str | int],
        message: str,
        *,
        hint: str | None = None,
        severity: str = "error",
    ) -> Diagnostic: ...


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _model_at(model: type[BaseModel], loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The pydantic model that holds the fields at ``loc`` (walking optional and list fields)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = _field_by_alias(current, part)
        if info is None:
            return None
        current = _inner_model(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_by_alias(model: type[BaseModel], name: str) -> Any:
    for field_name, info in model.model_fields.items():
        if (info.alias or field_name) == name:
            return info
    return None


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _inner_model(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def translate_validation_error(
    doc: Locating, model_type: type[BaseModel], exc: ValidationError
) -> list[Diagnostic]:
    """One Diagnostic per pydantic error, located and phrased for a person."""
    found: list[Diagnostic] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        value = error.get("input")
        hint: str | None = None
        if kind == "extra_forbidden":
            owner = _model_at(model_type, loc[:-1])
            names = _field_names(owner) if owner else []
            message = f"unknown field {loc[-1]!r}"
            hint = did_you_mean(str(loc[-1]), names) or (
                f"allowed: {', '.join(names)}" if names else None
            )
        elif kind == "missing":
            message = "required field is missing"
            hint = f"add '{loc[-1]}:'"
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            message = f"{value!r} is not allowed; expected {expected}"
            choices = re.findall(r"'([^']*)'", str(expected))
            hint = did_you_mean(str(value), choices)
        elif kind == "string_pattern_mismatch":
            message = f"{value!r} is not a safe name"
            hint = "use letters, digits, '_', '-' and '.'; it becomes a URL path segment"
        else:
            message = error["msg"]
            secret = any(part in SECRET_FIELDS for part in loc)
            if value is not None and not secret and not isinstance(value, dict | list):
                message += f" (got {value!r})"
        found.append(doc.diagnostic(loc, message, hint=hint))
    return found


__all__ = ["did_you_mean", "translate_validation_error"]
