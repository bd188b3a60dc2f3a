"""The state file: what apply last deployed, per lookup (``.reconciler/state.json`` by default).

It lets a plan verify what the service cannot show (a ``deployConfig: null`` answer, a CSV's content)
and remembers ``protect`` for lookups whose spec was removed. JSON, written atomically (temp file +
``os.replace``) after every lookup apply finishes, so a crash loses nothing already done. It holds
no secrets: configs are stored in their canonical form, which drops ``accessKey``/``secretKey``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import StateError

VERSION = 1


@dataclass
class LookupState:
    """What apply deployed for one lookup."""

    kind: str | None
    endpoint: str | None
    canonical: dict[str, Any]
    protect: bool = False
    job_id: str | None = None
    applied_at: str | None = None
    csv: dict[str, Any] | None = None  # {sha256, rows, path, commit}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "canonical": self.canonical,
            "protect": self.protect,
            "job_id": self.job_id,
            "applied_at": self.applied_at,
            "csv": self.csv,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LookupState:
        return cls(
            kind=data.get("kind"),
            endpoint=data.get("endpoint"),
            canonical=dict(data.get("canonical") or {}),
            protect=bool(data.get("protect", False)),
            job_id=data.get("job_id"),
            applied_at=data.get("applied_at"),
            csv=data.get("csv"),
        )


@dataclass
class State:
    """Every lookup apply has deployed, by address (``domain/name``)."""

    path: Path
    lookups: dict[str, LookupState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        """Read the state file; a missing file is an empty state, a broken one an error."""
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(
                f"state file {path} is unreadable: {exc}",
                hint="restore it from backup, or delete it: the next plan then relies on live state only",
            ) from None
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise StateError(f"state file {path} is not a version {VERSION} reconciler state")
        lookups = {
            address: LookupState.from_json(entry)
            for address, entry in (data.get("lookups") or {}).items()
        }
        return cls(path, lookups)

    def record(self, address: str, entry: LookupState) -> None:
        """Remember a deployed lookup and write the file at once."""
        self.lookups[address] = entry
        self.save()

    def forget(self, address: str) -> None:
        """Forget a deleted lookup and write the file at once."""
        if self.lookups.pop(address, None) is not None:
            self.save()

    def save(self) -> None:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": VERSION,
            "lookups": {a: e.to_json() for a, e in sorted(self.lookups.items())},
        }
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(payload, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
