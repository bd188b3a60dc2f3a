"""The state file: what apply last deployed, per lookup (``.reconciler/state.json`` by default).

Like ``kubectl apply``'s last-applied configuration, each record keeps both sides of the last apply:

* ``canonical``: what was *sent* (the canonical desired config), so a plan can tell a spec edit;
* ``echoed``: what the service *showed* for it afterwards (its ``deployConfig``, canonical), so a
  plan can tell a change made in Devo, whatever the service does to the text it echoes;
* ``observed``: the observable metadata after the job (``fields``, ``numEntries``, ``shared``);
* ``secrets``: a salted HMAC of the S3 keys that were sent (never the keys), to see a rotation;
* ``status``: ``deployed``, or ``submitted`` when apply did not follow the job (``--no-wait``);
  the next plan then checks that job before it trusts the record.

It also remembers ``protect`` for lookups whose spec was removed. JSON, written atomically (temp
file + ``os.replace``) after every lookup apply finishes, so a crash loses nothing already done. It
holds no secrets: configs are stored in their canonical form, which drops ``accessKey``/``secretKey``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as secrets_module
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import StateError

VERSION = 1
DEPLOYED, SUBMITTED = "deployed", "submitted"


def secret_digest(values: list[str], salt: str | None = None) -> dict[str, str]:
    """A salted HMAC-SHA256 of secret values: enough to see a rotation, useless to recover them."""
    salt = salt or secrets_module.token_hex(16)
    mac = hmac.new(bytes.fromhex(salt), digestmod=hashlib.sha256)
    for value in values:
        mac.update(len(value).to_bytes(4, "big") + value.encode())
    return {"salt": salt, "digest": mac.hexdigest()}


def secrets_rotated(recorded: dict[str, str] | None, values: list[str]) -> bool:
    """True when ``values`` are not the ones whose digest was recorded (False without a record)."""
    if not recorded or not recorded.get("salt") or not recorded.get("digest"):
        return False
    try:
        current = secret_digest(values, recorded["salt"])
    except ValueError:
        return False
    return not hmac.compare_digest(current["digest"], recorded["digest"])


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
    echoed: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)  # {fields, numEntries, shared}
    secrets: dict[str, str] | None = None  # {salt, digest}: a keyed hash, never a secret
    status: str = DEPLOYED

    @property
    def sent(self) -> dict[str, Any]:
        """What apply sent (the canonical desired config): the ``canonical`` field."""
        return self.canonical

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "canonical": self.canonical,
            "echoed": self.echoed,
            "observed": self.observed,
            "protect": self.protect,
            "job_id": self.job_id,
            "applied_at": self.applied_at,
            "status": self.status,
            "csv": self.csv,
            "secrets": self.secrets,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LookupState:
        """One record; ``StateError``-worthy shapes raise ``TypeError``/``ValueError``."""
        if not isinstance(data, dict):
            raise TypeError(f"a record must be an object, not {type(data).__name__}")
        for name in ("canonical", "echoed", "observed"):
            if not isinstance(data.get(name) or {}, dict):
                raise TypeError(f"{name!r} must be an object")
        for name in ("csv", "secrets"):
            if data.get(name) is not None and not isinstance(data[name], dict):
                raise TypeError(f"{name!r} must be an object or null")
        status = data.get("status") or DEPLOYED
        if status not in (DEPLOYED, SUBMITTED):
            raise ValueError(f"'status' must be {DEPLOYED!r} or {SUBMITTED!r}, not {status!r}")
        return cls(
            kind=data.get("kind"),
            endpoint=data.get("endpoint"),
            canonical=dict(data.get("canonical") or {}),
            protect=bool(data.get("protect", False)),
            job_id=data.get("job_id"),
            applied_at=data.get("applied_at"),
            csv=data.get("csv"),
            echoed=dict(data.get("echoed") or {}),
            observed=dict(data.get("observed") or {}),
            secrets=data.get("secrets"),
            status=status,
        )


@dataclass
class State:
    """Every lookup apply has deployed, by address (``domain/name``)."""

    path: Path
    lookups: dict[str, LookupState] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State:
        """Read the state file; a missing file is an empty state, a broken one an error."""
        try:
            if not path.exists():
                return cls(path)
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(
                f"state file {path} is unreadable: {exc}",
                hint="restore it from backup, or delete it: the next plan then relies on live state only",
            ) from None
        restore = (
            "restore it from backup, or delete it: the next plan then relies on live state only"
        )
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise StateError(
                f"state file {path} is not a version {VERSION} reconciler state", hint=restore
            )
        entries = data.get("lookups")
        entries = {} if entries is None else entries
        if not isinstance(entries, dict):
            raise StateError(f"state file {path}: 'lookups' is not an object", hint=restore)
        lookups = {}
        for address, entry in entries.items():
            try:
                lookups[address] = LookupState.from_json(entry)
            except (TypeError, ValueError) as exc:
                raise StateError(
                    f"state file {path}: the record of {address} is malformed: {exc}",
                    hint=f"restore the file from backup, or remove the {address!r} entry: the next "
                    "plan then compares that lookup with live state only",
                ) from None
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
        try:
            self._write()
        except OSError as exc:
            raise StateError(
                f"cannot write the state file {self.path}: {exc.strerror or exc}",
                hint=f"{self.path.parent}/ must be a folder this user can write",
            ) from None

    def _write(self) -> None:
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
