"""The saved plan (``plan --out FILE``): the plan JSON plus what ``apply --plan FILE`` needs to
apply it as it was reviewed, as one typed document, and the pure rule that says when it is stale.

A saved plan records, for each change, a digest of the live lookup it was made against and of its
spec (and CSV), and a digest of every spec of the run, no-ops included. ``stale_reasons`` compares
those with what is there now and names every difference, not the first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.client import LookupMeta
from reconciler.desired import DesiredLookup
from reconciler.plan.builder import live_fields, live_flat
from reconciler.plan.guards import Guards
from reconciler.plan.model import Plan

KIND: Literal["reconciler-plan"] = "reconciler-plan"


def fingerprint(meta: LookupMeta | None) -> str:
    """A digest of what a plan read about one live lookup (``absent`` when there was none)."""
    if meta is None:
        return "absent"
    data = {"config": live_flat(meta), "fields": live_fields(meta)}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def spec_fingerprint(want: DesiredLookup) -> str:
    """A spec's hash, with its CSV's sha256 when it has one."""
    return want.spec_hash + (f":{want.csv.sha256}" if want.csv else "")


class SavedChange(BaseModel):
    """One change of a saved plan, and the digests it was made against."""

    model_config = ConfigDict(extra="ignore")

    address: str
    action: str
    live_fingerprint: str
    spec_hash: str | None = None
    csv_sha256: str | None = None


class SavedGuards(BaseModel):
    """The guards the plan was made under (``Guards``), re-checked by its apply."""

    model_config = ConfigDict(extra="ignore")

    max_destroy: int | None = None
    allow_mass_destroy: bool = False
    allow_prune_without_state: bool = False
    allow_breaking: tuple[str, ...] = ()
    ignore_references: tuple[str, ...] = ()
    override_policies: tuple[str, ...] = ()

    def guards(self) -> Guards:
        return Guards(
            self.max_destroy,
            self.allow_mass_destroy,
            self.allow_prune_without_state,
            self.allow_breaking,
            self.ignore_references,
            self.override_policies,
        )


class SavedPlan(BaseModel):
    """The ``apply`` part of a saved plan file (the rest of the file is the plan JSON)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["reconciler-plan"]
    paths: list[str]
    allow_outside: bool = False
    guards: SavedGuards = Field(default_factory=SavedGuards)
    replace: list[str] = Field(default_factory=list)
    changes: list[SavedChange] = Field(default_factory=list)
    specs: dict[str, str] | None = None  # every spec of the run (None: a file of an older tool)

    @classmethod
    def read(cls, document: Any) -> SavedPlan:
        """The saved plan in a parsed file; ``ValueError`` when it is not one."""
        if not isinstance(document, dict) or not isinstance(document.get("apply"), dict):
            raise ValueError("no 'apply' section")
        try:
            return cls.model_validate(document["apply"])
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"])) from None

    @classmethod
    def of(
        cls,
        plan: Plan,
        desired: Mapping[str, DesiredLookup],
        live: Mapping[str, LookupMeta],
        paths: list[str],
        *,
        allow_outside: bool = False,
        guards: Guards | None = None,
        replace: list[str] | None = None,
    ) -> SavedPlan:
        """What apply needs to apply ``plan`` as it was made (no secret value in it)."""
        changes = []
        for change in plan.actionable:
            want = desired.get(change.address)
            changes.append(
                SavedChange(
                    address=change.address,
                    action=change.action.value,
                    live_fingerprint=fingerprint(live.get(change.address)),
                    spec_hash=want.spec_hash if want else None,
                    csv_sha256=want.csv.sha256 if want and want.csv else None,
                )
            )
        return cls(
            kind=KIND,
            paths=paths,
            allow_outside=allow_outside,
            guards=SavedGuards(**asdict(guards or Guards())),
            replace=sorted(replace or []),
            changes=changes,
            specs={a: spec_fingerprint(d) for a, d in desired.items()},
        )

    def document(self, plan: Plan) -> dict[str, Any]:
        """The file: the plan JSON, and this under ``apply``."""
        document = plan.to_json()
        document["apply"] = self.model_dump(mode="json")
        return document

    @property
    def addresses(self) -> set[str]:
        return {change.address for change in self.changes}


def stale_reasons(
    saved: SavedPlan,
    desired: Mapping[str, DesiredLookup],
    live: Mapping[str, LookupMeta | None],
) -> list[str]:
    """Every way the world moved since ``saved`` was made (empty: it can be applied). ``live``:
    each planned address's lookup as read now (None: not there)."""
    stale: list[str] = []
    for entry in saved.changes:
        address = entry.address
        if fingerprint(live.get(address)) != entry.live_fingerprint:
            stale.append(f"{address}: the live lookup changed since the plan was made")
        want = desired.get(address)
        if (want.spec_hash if want else None) != entry.spec_hash:
            stale.append(f"{address}: its spec changed since the plan was made")
        elif (want.csv.sha256 if want and want.csv else None) != entry.csv_sha256:
            stale.append(f"{address}: its CSV file changed since the plan was made")
    if saved.specs is not None:
        current = {a: spec_fingerprint(d) for a, d in desired.items()}
        for address in sorted(set(current) | set(saved.specs)):
            if address in saved.addresses:
                continue  # said above, with its live fingerprint
            if address not in saved.specs:
                stale.append(f"{address}: its spec was added since the plan was made")
            elif address not in current:
                stale.append(f"{address}: its spec was removed since the plan was made")
            elif current[address] != saved.specs[address]:
                stale.append(f"{address}: its spec or CSV changed since the plan was made")
    return stale


__all__ = ["KIND", "SavedPlan", "fingerprint", "spec_fingerprint", "stale_reasons"]
