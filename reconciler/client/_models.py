"""Typed, tolerant models of every Lookups API response.

Tolerant on purpose: the reconciler talks to independent implementations of the API, so unknown
fields are kept (``extra="allow"``), nullable fields may be null or missing, ``visibility`` may be a
string or ``{"type": ...}``, and numbers may arrive as strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from reconciler.canonical import visibility_of


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FieldInfo(_Tolerant):
    """One column of a lookup's metadata ``fields``: name, lower-case type, key flag."""

    column: str
    type: str = "str"
    key: bool = False


class LookupMeta(_Tolerant):
    """A lookup's metadata (an item of ``lookups``, or ``lookupMetaInfo`` of the single GET)."""

    name: str
    domain: str | None = None
    fileSize: int | None = None
    numEntries: int | None = None
    creationDate: str | None = None
    keyType: Any = None
    deployConfig: dict[str, Any] | None = None
    lastStatus: Any = None
    fields: list[FieldInfo] = Field(default_factory=list)
    shared: bool | None = None
    owner: str | None = None

    @field_validator("fields", mode="before")
    @classmethod
    def _null_fields(cls, value: Any) -> Any:
        return value or []

    @property
    def visibility(self) -> str | None:
        """``creator-only``/``all-subdomains`` from the deploy config, else from ``shared``."""
        if self.deployConfig is not None:
            found = visibility_of(self.deployConfig.get("visibility"))
            if found is not None:
                return found
        if self.shared is None:
            return None
        return "all-subdomains" if self.shared else "creator-only"


class LookupList(_Tolerant):
    """One page of ``GET /lookup/{domain}``."""

    lookups: list[LookupMeta] = Field(default_factory=list)
    nextPageToken: int | None = -1

    @field_validator("lookups", mode="before")
    @classmethod
    def _null_list(cls, value: Any) -> Any:
        return value or []


class LookupOne(_Tolerant):
    """``GET /lookup/{domain}/{name}``."""

    lookupMetaInfo: LookupMeta


class CreationResponse(_Tolerant):
    """201 of a deploy: the job id and the deploy config the server derived."""

    id: str | None = None
    msg: str | None = None
    lookupDeployConfig: dict[str, Any] | None = None


class DeletionResponse(_Tolerant):
    """200 of a delete: the job id."""

    id: str | None = None
    msg: str | None = None


class JobIds(_Tolerant):
    """``GET .../job``: the last job ids, oldest first."""

    jobs: list[str] = Field(default_factory=list)

    @field_validator("jobs", mode="before")
    @classmethod
    def _null_jobs(cls, value: Any) -> Any:
        return [str(v) for v in value or []]


class JobStatus(_Tolerant):
    """One status of a job: when, which code (``create.ok``...), and Devo's message."""

    code: str
    eventdata: str | None = None
    msg: str | None = None
    domain: str | None = None
    lookup: str | None = None

    @field_validator("code", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return str(value).strip().lower()


class JobStatuses(_Tolerant):
    """``GET .../job/{id}``: the job's last statuses, oldest first.

    Devo's page shows them under ``status``; Devo's own 2023 client read them under ``jobs``. Both
    are accepted. ``known_shape`` is False when neither key holds a list: the caller must then treat
    the job as still running, never as an empty success.
    """

    status: list[JobStatus] = Field(default_factory=list)
    known_shape: bool = True

    @model_validator(mode="before")
    @classmethod
    def _either_key(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return {"status": [], "known_shape": False}
        for key in ("status", "jobs"):
            found = value.get(key)
            if isinstance(found, list) and all(isinstance(s, dict) for s in found):
                return {**value, "status": found, "known_shape": True}
        if value.get("status") is None and value.get("jobs") is None and "status" in value:
            return {**value, "status": [], "known_shape": True}  # an explicit null: no status yet
        return {**value, "status": [], "known_shape": False}


__all__ = [
    "CreationResponse",
    "DeletionResponse",
    "FieldInfo",
    "JobIds",
    "JobStatus",
    "JobStatuses",
    "LookupList",
    "LookupMeta",
    "LookupOne",
]


@dataclass
class DeployResult:
    """What a deploy or delete call started: the job id (None if the server gave none)."""

    job_id: str | None
    deploy_config: dict[str, Any] | None = None
    recovered: bool = False  # the answer was lost; the job id was found by reading the lookup
    # When the request went out and when its answer came, by the client's clock: the job's first
    # status was stamped in between (what ``JobLatency`` learns from). None when recovered.
    sent: float | None = None
    answered: float | None = None
