"""The spec language: pydantic models of ``Lookup`` and ``Domain`` documents.

Field names inside source blocks are Devo's own (camelCase), so a body copied from Devo's docs pastes
in. Every model forbids unknown keys: a typo is an error with a did-you-mean, never a silent default.
The JSON Schema printed by ``reconciler schema`` is generated from these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reconciler.coltypes import ColumnType

# Names become URL path segments (/lookup/{domain}/{name}): keep them to a safe set.
DOMAIN_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,99}$"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"

Visibility = Literal["creator-only", "all-subdomains"]
KeyType = Literal["first-column", "column", "row-hash", "col-hash", "seq"]

#: Fields whose values are secrets: masked in every output, resolved from ``${env:...}`` at apply.
SECRET_FIELDS = frozenset({"accessKey", "secretKey"})


class _Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Column(_Strict):
    """A CSV column: its name, Devo type, and (deploy-config only) its 0-based index in the CSV."""

    name: str = Field(min_length=1)
    type: ColumnType = "STRING"
    from_: int | None = Field(default=None, alias="from", ge=0)


class Key(_Strict):
    """How the lookup's key is built (``key`` in Devo's bodies)."""

    type: KeyType = "first-column"
    column: str | None = None
    columns: list[str] | None = None


class Contribution(_Strict):
    """Whether rows add or delete entries, or a string column says which (``col``)."""

    type: Literal["add", "del", "col"] = "add"
    name: str | None = None


class LookupType(_Strict):
    """``normal`` or ``historic`` lookups and, for historic ones, where each row's instant comes from."""

    type: Literal["normal", "historic"] = "normal"
    instantPolicy: Literal["natural", "const", "column"] | None = None
    instant: int | float | None = None
    columnName: str | None = None


class SecondaryIndexes(_Strict):
    """Extra indexes: none, all columns, or by name (``map``)."""

    type: Literal["none", "all", "by-name"] = "none"
    map: dict[str, Any] | None = None


class FileProvider(_Strict):
    """A CSV in S3 (or an S3-compatible store). ``accessKey``/``secretKey`` should be ``${env:...}``."""

    bucketName: str = Field(min_length=1)
    keyName: str = Field(min_length=1)
    transferOwnership: bool
    accessKey: str | None = None
    secretKey: str | None = None
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    region: str | None = None


class CsvSource(_Strict):
    """``csv``: a lookup from a CSV kept in git (``file``) or in S3 (``fileProvider``) → deploy-csv."""

    file: str | None = None
    fileProvider: FileProvider | None = None
    columns: list[Column] = Field(min_length=1)
    key: Key | None = None
    hasHeader: bool = False
    skipEmptyLines: bool = False
    skipPreface: str | None = None
    contribution: Contribution | None = None
    upload: Literal["auto", "full", "delta"] = Field(
        default="auto",
        description="csv.file only: how a changed CSV is sent. full: the whole file; delta: only "
        "the rows that changed since the recorded content (Devo's append + del/add row protocol); "
        "auto: delta when the recorded content is known and the change is small.",
    )


class StaticQuerySource(_Strict):
    """``staticQuery``: a lookup from a query run once → deploy-static-query."""

    query: str = Field(min_length=1)
    key: Key | None = None
    keepHistory: bool = False
    columnTimeReference: str | None = None
    append: bool = False


class PeriodicQuerySource(_Strict):
    """``periodicQuery``: a lookup refreshed from a query every ``refreshPeriod`` → deploy-periodic-query."""

    query: str = Field(min_length=1)
    key: Key | None = None
    refreshPeriod: str | None = None
    startDate: str | int | None = None
    append: bool = False
    keepHistory: bool = False


class SlidingWindowQuerySource(_Strict):
    """``slidingWindowQuery``: a query over the last ``windowSize`` → deploy-sliding-window-query."""

    query: str = Field(min_length=1)
    key: Key | None = None
    windowSize: str
    refreshPeriod: str | None = None
    startDate: str | int | None = None


class RecipeSource(_Strict):
    """``recipe.source``: either a ``query`` or a CSV in S3 (``columns`` + ``fileProvider``)."""

    query: str | None = None
    columns: list[Column] | None = None
    fileProvider: FileProvider | None = None
    skipPreface: str | None = None
    hasHeader: bool = False
    skipEmptyLines: bool = False


class Recipe(_Strict):
    """``recipe``: the deploy-config recipe exactly as Devo documents it → deploy-config."""

    recipeType: Literal["once", "periodic"]
    source: RecipeSource
    lookupType: LookupType | None = None
    append: bool = False
    key: Key | None = None
    columnFilter: list[str] | None = None
    contribution: Contribution | None = None
    secondaryIndexes: SecondaryIndexes | None = None
    refreshMillis: int | None = Field(default=None, ge=0)
    startMillis: int | None = Field(default=None, ge=0)
    requiresDate: bool = False


SOURCE_KINDS: dict[str, str] = {
    "csv": "deploy-csv",
    "staticQuery": "deploy-static-query",
    "periodicQuery": "deploy-periodic-query",
    "slidingWindowQuery": "deploy-sliding-window-query",
    "recipe": "deploy-config",
}


class LookupSpec(_Strict):
    """The ``spec`` of a Lookup: visibility, lifecycle flags and exactly one source block."""

    visibility: Visibility = "creator-only"
    protect: bool = False
    state: Literal["present", "absent"] = "present"
    csv: CsvSource | None = None
    staticQuery: StaticQuerySource | None = None
    periodicQuery: PeriodicQuerySource | None = None
    slidingWindowQuery: SlidingWindowQuerySource | None = None
    recipe: Recipe | None = None
    notifyStatus: bool | None = None

    def sources(self) -> list[str]:
        """The names of the source blocks that are set (a valid spec has exactly one)."""
        return [kind for kind in SOURCE_KINDS if getattr(self, kind) is not None]

    @property
    def source_kind(self) -> str | None:
        """The one source block's name, or None when there is not exactly one."""
        kinds = self.sources()
        return kinds[0] if len(kinds) == 1 else None


class LookupMetadata(_Strict):
    """Which lookup: the owning Devo domain and the lookup's name."""

    domain: str = Field(pattern=DOMAIN_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)


class LookupDocument(_Strict):
    """A ``kind: Lookup`` document."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Lookup"]
    metadata: LookupMetadata
    spec: LookupSpec

    @property
    def address(self) -> str:
        """``domain/name``, the lookup's address in plans and selectors."""
        return f"{self.metadata.domain}/{self.metadata.name}"


class DomainMetadata(_Strict):
    """Which domain."""

    name: str = Field(pattern=DOMAIN_PATTERN)


class DomainSpec(_Strict):
    """Domain-wide policy: whether to prune unnamed live lookups, and which globs are never pruned."""

    prune: bool = False
    keep: list[str] = Field(default_factory=list)
    maxDestroy: int | None = Field(
        default=None, ge=0, description="Refuse a plan that deletes more lookups of this domain."
    )


class DomainDocument(_Strict):
    """A ``kind: Domain`` document."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Domain"]
    metadata: DomainMetadata
    spec: DomainSpec = Field(default_factory=DomainSpec)


DOCUMENT_MODELS: dict[str, type[LookupDocument] | type[DomainDocument]] = {
    "Lookup": LookupDocument,
    "Domain": DomainDocument,
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one spec document (a Lookup or a Domain), for editors and CI."""
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema(
        [(LookupDocument, "validation"), (DomainDocument, "validation")],
        ref_template="#/$defs/{model}",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://reconciler.dev/schema/v1.json",
        "title": "reconciler spec document",
        "oneOf": [
            {"$ref": "#/$defs/LookupDocument"},
            {"$ref": "#/$defs/DomainDocument"},
        ],
        "$defs": defs["$defs"],
    }
