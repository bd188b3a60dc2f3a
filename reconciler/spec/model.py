"""The spec language: pydantic models of ``Lookup`` and ``Domain`` documents.

Field names inside source blocks are Devo's own (camelCase), so a body copied from Devo's docs pastes
in. Every model forbids unknown keys: a typo is an error with a did-you-mean, never a silent default.
The JSON Schema printed by ``reconciler schema`` is generated from these models.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from reconciler.canonical import SECRET_KEYS
from reconciler.settings import Region
from reconciler.sources import (
    ENDPOINTS,
    KINDS,
    Column,
    Contribution,
    FileProvider,
    Key,
    KeyType,
    LookupType,
    SecondaryIndexes,
    Strict,
)
from reconciler.sources.csv import CsvSource
from reconciler.sources.periodic_query import PeriodicQuerySource
from reconciler.sources.recipe import Recipe, RecipeSource
from reconciler.sources.sliding_window_query import SlidingWindowQuerySource
from reconciler.sources.static_query import StaticQuerySource

B = TypeVar("B", bound=BaseModel)

# Names become URL path segments (/lookup/{domain}/{name}): keep them to a safe set.
DOMAIN_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,99}$"
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"

Visibility = Literal["creator-only", "all-subdomains"]


def _label_text(value: Any) -> Any:
    """A label written unquoted (``pii: true``, ``tier: 1``) reads as its text (``"true"``,
    ``"1"``), so a policy matching ``pii: "true"`` sees it; anything else is left to the type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


#: A label's value: text (YAML's unquoted booleans and numbers read as the text they were written as).
LabelValue = Annotated[str, BeforeValidator(_label_text)]

#: Fields whose values are secrets: masked in every output, resolved from ``${env:...}`` at apply.
SECRET_FIELDS = SECRET_KEYS

#: The spec block of each source kind → its endpoint (the table lives in ``reconciler.sources``).
SOURCE_KINDS: dict[str, str] = ENDPOINTS


class LookupSpec(Strict):
    """The ``spec`` of a Lookup: visibility, lifecycle flags and exactly one source block."""

    # One field per source kind, in the JSON Schema's order; each block's model lives with its kind
    # in ``reconciler.sources`` (tests/test_architecture.py keeps these fields and ``KINDS`` one set).
    visibility: Visibility = "creator-only"
    protect: bool = False
    state: Literal["present", "absent"] = "present"
    csv: CsvSource | None = None
    staticQuery: StaticQuerySource | None = None
    periodicQuery: PeriodicQuerySource | None = None
    slidingWindowQuery: SlidingWindowQuerySource | None = None
    recipe: Recipe | None = None
    notifyStatus: bool | None = None
    checks: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="CEL assertions on the live lookup, after apply and in drift "
        "(e.g. numEntries >= 1000); added to its Domain's checks.",
    )

    def sources(self) -> list[str]:
        """The names of the source blocks that are set (a valid spec has exactly one)."""
        return [kind for kind in KINDS if getattr(self, kind, None) is not None]

    @functools.cached_property
    def source_kind(self) -> str | None:
        """The one source block's name, or None when there is not exactly one (asked by every
        check of every lookup: worked out once; a spec is not changed after validation)."""
        kinds = self.sources()
        return kinds[0] if len(kinds) == 1 else None

    @property
    def source(self) -> Any:
        """The one source block's model, or None when there is not exactly one."""
        kind = self.source_kind
        return getattr(self, kind) if kind else None

    def block(self, model: type[B]) -> B | None:
        """The source block of type ``model`` (e.g. ``CsvSource``) when it is the one set."""
        source = self.source
        return source if isinstance(source, model) else None

    @property
    def notify_status(self) -> bool | None:
        """``notifyStatus`` (deploy-config bodies only)."""
        return self.notifyStatus


class DomainSelector(Strict):
    """Every Domain whose ``metadata.labels`` include all of these."""

    labels: dict[str, LabelValue] = Field(min_length=1)


class LookupMetadata(Strict):
    """Which lookup: its name, and its domain, or the domains it fans out to.

    Exactly one of ``domain`` (one lookup), ``domains`` (one lookup per listed domain) and
    ``domainSelector`` (one per Domain document whose labels match). A fanned-out document is
    expanded at load time into one lookup per domain; addresses stay ``domain/name``.
    """

    domain: str = Field(default="", pattern=DOMAIN_PATTERN)
    domains: list[Annotated[str, Field(pattern=DOMAIN_PATTERN)]] | None = Field(
        default=None, min_length=1
    )
    domainSelector: DomainSelector | None = None
    name: str = Field(pattern=NAME_PATTERN)
    labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        description='Labels for policies to match (owner, pii, ...); quote values: pii: "true".',
    )

    @model_validator(mode="after")
    def _one_way_to_name_domains(self) -> LookupMetadata:
        given = [k for k in ("domain", "domains", "domainSelector") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of 'domain', 'domains' and 'domainSelector'"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if self.domains is not None and len(set(self.domains)) != len(self.domains):
            raise ValueError("'domains' lists a domain twice")
        return self

    @property
    def fans_out(self) -> bool:
        """True for ``domains`` or ``domainSelector`` (before expansion)."""
        return not self.domain


class LookupDocument(Strict):
    """A ``kind: Lookup`` document."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Lookup"]
    metadata: LookupMetadata
    spec: LookupSpec

    @property
    def address(self) -> str:
        """``domain/name``, the lookup's address in plans and selectors."""
        return f"{self.metadata.domain}/{self.metadata.name}"


class DomainMetadata(Strict):
    """Which domain, and the labels ``domainSelector`` matches."""

    name: str = Field(pattern=DOMAIN_PATTERN)
    labels: dict[str, LabelValue] = Field(default_factory=dict)


class DomainAuth(Strict):
    """This domain's own credential, named by environment variables (never the values)."""

    tokenEnv: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    apiKeyEnv: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    apiSecretEnv: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_credential(self) -> DomainAuth:
        key_pair = self.apiKeyEnv is not None or self.apiSecretEnv is not None
        if (self.tokenEnv is not None) == key_pair:
            raise ValueError("give either 'tokenEnv', or 'apiKeyEnv' and 'apiSecretEnv'")
        if key_pair and (self.apiKeyEnv is None or self.apiSecretEnv is None):
            raise ValueError("'apiKeyEnv' and 'apiSecretEnv' go together")
        return self


class DomainSpec(Strict):
    """Domain-wide policy: whether to prune unnamed live lookups, and which globs are never pruned;
    this domain's own credential, and the wave it is applied in."""

    prune: bool = False
    keep: list[str] = Field(default_factory=list)
    maxDestroy: int | None = Field(
        default=None, ge=0, description="Refuse a plan that deletes more lookups of this domain."
    )
    url: str | None = Field(
        default=None,
        description="This domain's own Lookups API endpoint (else the run's): https:// (http:// on "
        "loopback only), and only with its own auth.",
    )
    region: Region | None = Field(
        default=None, description="This domain's Devo region (its endpoint: api-REGION.devo.com)."
    )
    auth: DomainAuth | None = Field(
        default=None,
        description="This domain's own credential; requests for it never use another one.",
    )
    wave: int = Field(
        default=0,
        ge=0,
        description="Apply order: waves ascending; a wave with a failure stops the waves after it.",
    )
    checks: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="CEL assertions every lookup of this domain must pass on the live service "
        "(after apply, in drift, in reconciler check).",
    )
    references: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list,
        description="Globs of files whose LINQ uses this domain's lookups (alerts, saved "
        "queries): relative to this file's folder, or else to the repository root.",
    )


class DomainDocument(Strict):
    """A ``kind: Domain`` document."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Domain"]
    metadata: DomainMetadata
    spec: DomainSpec = Field(default_factory=DomainSpec)

    @model_validator(mode="after")
    def _one_endpoint(self) -> DomainDocument:
        if self.spec.url is not None and self.spec.region is not None:
            raise ValueError("give 'url' or 'region', not both")
        return self


class OverlayMetadata(Strict):
    """The one lookup (of a fanned-out Lookup) in one domain that an Overlay patches."""

    domain: str = Field(pattern=DOMAIN_PATTERN)
    name: str = Field(pattern=NAME_PATTERN)


class OverlayDocument(Strict):
    """A ``kind: Overlay`` document: a patch merged onto one fanned-out lookup's spec.

    Mappings merge, scalars and lists replace, ``null`` removes. For ``csv.file`` lookups,
    ``spec.csv.patch`` adds rows (``add``: a CSV with the same columns; a row whose key exists
    replaces it) and removes keys (``remove``) on top of the shared CSV. The merged spec is
    validated like any Lookup's.
    """

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Overlay"]
    metadata: OverlayMetadata
    spec: dict[str, Any]

    @property
    def address(self) -> str:
        """``domain/name`` of the lookup it patches."""
        return f"{self.metadata.domain}/{self.metadata.name}"


Enforcement = Literal["advisory", "soft-mandatory", "mandatory"]


class PolicyMatch(Strict):
    """Which planned changes a Policy's rules see: every listed condition must hold (globs for
    domains and names, source kinds, labels the lookup must carry with these values)."""

    domains: list[str] = Field(default_factory=lambda: ["*"])
    names: list[str] = Field(default_factory=lambda: ["*"])
    kinds: list[str] | None = None
    labels: dict[str, LabelValue] = Field(default_factory=dict)


class PolicyRule(Strict):
    """One rule: a CEL expression that must be true of the change, what to say when it is not,
    and how hard it holds (``advisory``: a warning; ``soft-mandatory``: an error unless
    ``--override-policy``; ``mandatory``: an error)."""

    expr: str = Field(min_length=1)
    message: str = Field(min_length=1)
    enforcement: Enforcement = "mandatory"
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")


class PolicySpec(Strict):
    """A Policy's ``match`` and ``rules``."""

    match: PolicyMatch = Field(default_factory=PolicyMatch)
    rules: list[PolicyRule] = Field(min_length=1)


class PolicyMetadata(Strict):
    """The Policy's name (what ``--override-policy`` names)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


class PolicyDocument(Strict):
    """A ``kind: Policy`` document: rules every plan must pass."""

    apiVersion: Literal["reconciler/v1"]
    kind: Literal["Policy"]
    metadata: PolicyMetadata
    spec: PolicySpec


Document = LookupDocument | DomainDocument | OverlayDocument | PolicyDocument
DOCUMENT_MODELS: dict[str, type[Document]] = {
    "Lookup": LookupDocument,
    "Domain": DomainDocument,
    "Overlay": OverlayDocument,
    "Policy": PolicyDocument,
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of one spec document (a Lookup or a Domain), for editors and CI."""
    from pydantic.json_schema import models_json_schema

    _, defs = models_json_schema(
        [
            (LookupDocument, "validation"),
            (DomainDocument, "validation"),
            (OverlayDocument, "validation"),
            (PolicyDocument, "validation"),
        ],
        ref_template="#/$defs/{model}",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://reconciler.dev/schema/v1.json",
        "title": "reconciler spec document",
        "oneOf": [
            {"$ref": "#/$defs/LookupDocument"},
            {"$ref": "#/$defs/DomainDocument"},
            {"$ref": "#/$defs/OverlayDocument"},
            {"$ref": "#/$defs/PolicyDocument"},
        ],
        "$defs": defs["$defs"],
    }


__all__ = [
    "DOCUMENT_MODELS",
    "DomainAuth",
    "DomainSelector",
    "OverlayDocument",
    "PolicyDocument",
    "SECRET_FIELDS",
    "SOURCE_KINDS",
    "Column",
    "Contribution",
    "CsvSource",
    "DomainDocument",
    "FileProvider",
    "Key",
    "KeyType",
    "LookupDocument",
    "LookupSpec",
    "LookupType",
    "PeriodicQuerySource",
    "Recipe",
    "RecipeSource",
    "SecondaryIndexes",
    "SlidingWindowQuerySource",
    "StaticQuerySource",
    "json_schema",
]
