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

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from reconciler.errors import StateError
from reconciler.state.backends import (
    AlreadyExists,
    Backend,
    Precondition,
    new_run_id,
    open_backend,
)
from reconciler.state.crypto import SecretDigest

VERSION = 1
RecordStatus = Literal["deployed", "submitted"]
DEPLOYED: RecordStatus = "deployed"  # its job was followed to success
SUBMITTED: RecordStatus = "submitted"  # sent with --no-wait: the next plan reads its job


class CsvRecord(BaseModel):
    """What a ``csv.file`` lookup's last apply sent: the content's sha256 and data rows, the file
    it came from, and the commit checked out there (the fallback when no snapshot is kept)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    sha256: str | None = None
    rows: int | None = None
    path: str | None = None
    commit: str | None = None


class Observed(BaseModel):
    """What the service showed of a lookup when its apply was recorded, config or not: its columns
    as ``fields`` (name, type, key), ``numEntries`` (None when it proves nothing: a job counted done
    at create.ok), ``shared``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    fields: list[list[Any]] | None = None
    numEntries: int | None = None
    shared: bool | None = None


class LookupState(BaseModel):
    """What apply deployed for one lookup; validated whenever a state is read back."""

    # A newer reconciler's extra fields are kept out, not refused: old tools read new state.
    model_config = ConfigDict(extra="ignore")

    kind: str | None = None
    endpoint: str | None = None
    canonical: dict[str, Any] = Field(default_factory=dict)  # what apply sent, canonical form
    protect: bool = False
    job_id: str | None = None
    applied_at: str | None = None
    csv: CsvRecord | None = None
    echoed: dict[str, Any] = Field(default_factory=dict)
    observed: Observed = Field(default_factory=Observed)
    secrets: SecretDigest | None = None  # a keyed hash, never a secret
    status: RecordStatus = DEPLOYED

    @field_validator("canonical", "echoed", "observed", "status", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return DEPLOYED if info.field_name == "status" else {}
        return value

    def to_json(self) -> dict[str, Any]:
        """The record as the state file stores it."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: Any) -> LookupState:
        """One record; a malformed one raises ``ValueError`` saying which field and why."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the record"
            raise ValueError(f"{where}: {first['msg']}") from None


@dataclass
class State:
    """Every lookup apply has deployed, by address (``domain/name``), in its backend.

    Writing one lookup's record costs O(1) in the number of lookups: ``record``/``forget`` add one
    entry to the run's record log (a line in a file, or one object), and ``commit`` writes the
    compacted state once, at the end of the run, with a compare-and-swap. When another writer got
    there first (two runs that bypassed the lock), ``commit`` reads the new state, replays this
    run's entries on top and tries again, so no run ever loses another's records. ``load`` replays
    the log a killed run left behind, so nothing it recorded is lost either.
    """

    location: str
    lookups: dict[str, LookupState] = field(default_factory=dict)
    _backend: Backend | None = field(default=None, repr=False)
    _key: str = "state.json"
    _etag: str | None = None
    _run: str = field(default_factory=new_run_id)
    _ops: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list, repr=False)
    _replayed: list[str] = field(default_factory=list, repr=False)
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    writes: int = 0  # objects or lines written (for benchmarks)
    bytes_written: int = 0

    def __post_init__(self) -> None:
        self.location = str(self.location)  # a Path is welcome too

    @property
    def backend(self) -> Backend:
        """Where the state lives."""
        if self._backend is None:
            self._backend, self._key = open_backend(self.location)
        return self._backend

    @classmethod
    def load(cls, location: str | Path) -> State:
        """Read the state and replay the record log of runs that did not finish (killed ones).

        A missing state is an empty one; a broken one is an error.
        """
        state = cls(str(location))
        stored = state.backend.read(state._key)
        state._etag = stored.etag if stored is not None else None
        state.lookups = _parse(stored.data, state.location) if stored is not None else {}
        entries = state.backend.log_entries(state._key)  # one listing: runs and entries
        state._replayed = sorted({run for run, _, _ in entries})
        for _, name, raw in entries:
            for op in _log_ops(raw):  # none for a torn last entry of a killed run
                _apply(state.lookups, op, f"{state.location} ({name})")
        return state

    def record(self, address: str, entry: LookupState) -> None:
        """Remember a deployed lookup: one log entry now, the compacted state at ``commit``.

        Safe to call from worker threads (apply records off its event loop).
        """
        self.record_many({address: entry})

    def record_many(self, entries: dict[str, LookupState]) -> None:
        """Remember several lookups with one log entry (one object in an object store)."""
        if not entries:
            return
        with self._lock:
            self.lookups.update(entries)
        self._log([("record", a, e.to_json()) for a, e in entries.items()])

    def forget(self, address: str) -> None:
        """Forget a deleted lookup (one log entry)."""
        with self._lock:
            gone = self.lookups.pop(address, None) is not None
        if gone:
            self._log([("forget", address, None)])

    def _log(self, ops: list[tuple[str, str, dict[str, Any] | None]]) -> None:
        with self._lock:
            self._ops.extend(ops)
            self._seq += 1
            seq = self._seq
        body: dict[str, Any]
        if len(ops) == 1:
            body = {"op": ops[0][0], "address": ops[0][1], "entry": ops[0][2]}
        else:
            body = {"op": "batch", "ops": [{"op": k, "address": a, "entry": e} for k, a, e in ops]}
        data = json.dumps(body, sort_keys=True).encode()
        self.backend.append(self._key, self._run, seq, data)
        with self._lock:
            self.writes += 1
            self.bytes_written += len(data)

    def commit(self, *, attempts: int = 20) -> None:
        """Write the compacted state (compare-and-swap) and drop the logs it now contains."""
        if not self._ops and not self._replayed:
            return
        for _ in range(attempts):
            payload = _dump(self.lookups)
            try:
                if self._etag is None:
                    self._etag = self.backend.write(self._key, payload, create=True)
                else:
                    self._etag = self.backend.write(self._key, payload, etag=self._etag)
            except (AlreadyExists, Precondition):
                self._rebase()
                continue
            self.writes += 1
            self.bytes_written += len(payload)
            for run in {self._run, *self._replayed}:
                self.backend.drop_log(self._key, run)
            self._ops.clear()
            self._replayed.clear()
            return
        raise StateError(
            f"state {self.location} kept changing while this run wrote it",
            hint="another apply is writing the same state: run apply again once it is done",
        )

    def _rebase(self) -> None:
        """Another writer won: start from its state and replay this run's entries on top."""
        stored = self.backend.read(self._key)
        self._etag = stored.etag if stored is not None else None
        lookups = _parse(stored.data, self.location) if stored is not None else {}
        for op in self._ops:
            _apply(lookups, op, self.location)
        self.lookups = lookups

    def document(self) -> dict[str, Any]:
        """The state as its JSON document (for ``state show`` and ``state migrate``)."""
        document: dict[str, Any] = json.loads(_dump(self.lookups))
        return document


def _dump(lookups: dict[str, LookupState]) -> bytes:
    """The state document: one lookup per line, sorted, keys sorted.

    ``indent`` would put every value on a line of its own, and only Python's own encoder
    indents: 0.50 s per commit of a 10,000-lookup state, against 0.17 s (most of it the records'
    ``model_dump``) with C's encoder writing each lookup on one line, which reads and diffs as
    well, in a quarter fewer bytes."""
    lines = ",\n".join(
        f"{json.dumps(address)}: {json.dumps(entry.to_json(), sort_keys=True)}"
        for address, entry in sorted(lookups.items())
    )
    return f'{{"version": {VERSION}, "lookups": {{\n{lines}\n}}}}\n'.encode()


def _log_ops(raw: bytes) -> list[tuple[str, str, dict[str, Any] | None]]:
    """The operations of one log entry (none when it is torn or not an entry)."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return []
    items = data.get("ops") if isinstance(data, dict) and data.get("op") == "batch" else [data]
    ops = []
    for item in items if isinstance(items, list) else []:
        if (
            isinstance(item, dict)
            and item.get("op") in ("record", "forget")
            and isinstance(item.get("address"), str)
        ):
            ops.append((item["op"], item["address"], item.get("entry")))
    return ops


def _apply(
    lookups: dict[str, LookupState], op: tuple[str, str, dict[str, Any] | None], where: str
) -> None:
    kind, address, entry = op
    if kind == "forget":
        lookups.pop(address, None)
        return
    try:
        lookups[address] = LookupState.from_json(entry)
    except (TypeError, ValueError) as exc:
        raise StateError(
            f"state {where}: a logged record of {address} is malformed: {exc}",
            hint="remove that log entry; the next plan then compares the lookup with live state",
        ) from exc


def _parse(raw: bytes, location: str) -> dict[str, LookupState]:
    restore = "restore it from backup, or delete it: the next plan then relies on live state only"
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"state file {location} is unreadable: {exc}", hint=restore) from exc
    except RecursionError:  # nesting no state has: a hostile or broken file
        raise StateError(
            f"state file {location} is unreadable: nested too deeply", hint=restore
        ) from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise StateError(
            f"state file {location} is not a version {VERSION} reconciler state", hint=restore
        )
    entries = data.get("lookups")
    entries = {} if entries is None else entries
    if not isinstance(entries, dict):
        raise StateError(f"state file {location}: 'lookups' is not an object", hint=restore)
    lookups = {}
    for address, entry in entries.items():
        try:
            lookups[address] = LookupState.from_json(entry)
        except (TypeError, ValueError) as exc:
            raise StateError(
                f"state file {location}: the record of {address} is malformed: {exc}",
                hint=f"restore the file from backup, or remove the {address!r} entry: the next "
                "plan then compares that lookup with live state only",
            ) from exc
    return lookups


@dataclass(frozen=True)
class Migration:
    """What ``state migrate`` copied, and what it found already there (a resumed migration)."""

    records: int
    entries: int
    records_there: int = 0
    entries_there: int = 0

    def describe(self, source: str, target: str) -> str:
        """One line for stderr."""
        text = (
            f"Copied {self.records} record(s) and {self.entries} journal entr(y/ies) from "
            f"{source} to {target}."
        )
        if self.records_there or self.entries_there:
            text += (
                f" Resumed: {self.records_there} record(s) and {self.entries_there} journal "
                "entr(y/ies) were there already from an interrupted migration."
            )
        return text


def migrate(source: str, target: str) -> Migration:
    """Copy the journal, then the CSV snapshots, then the state, from ``source`` to ``target``.
    The source is left as it was.

    The journal goes first and the state last, so a migration killed half way leaves a target
    with no state (no command mistakes it for a finished one), and running it again resumes it:
    entries already there (by id) and records already there (equal) are not copied twice. A
    target holding anything that is not the source's (another record, another journal entry) is
    refused, so nothing there is overwritten.
    """
    from reconciler.state.journal import Journal

    if source == target:
        raise StateError("--to names the state it would copy from")
    loaded = State.load(source)
    destination = State.load(target)
    other = sorted(a for a, r in destination.lookups.items() if loaded.lookups.get(a) != r)
    if other:
        raise StateError(
            f"{target} already holds a state with records that are not the source's "
            f"({', '.join(other[:5])}{' ...' if len(other) > 5 else ''})",
            hint="migrate into an empty location, so no records there are overwritten",
        )
    source_journal, target_journal = Journal.for_state(source), Journal.for_state(target)
    there = {entry.id for entry in target_journal.entries()}
    entries = list(source_journal.entries())
    foreign = there - {entry.id for entry in entries}
    if foreign:
        raise StateError(
            f"{target} holds {len(foreign)} journal entr(y/ies) that are not the source's",
            hint="migrate into an empty location, so no audit trail there is mixed with another",
        )
    copied = 0
    for entry in entries:
        if entry.id not in there:
            target_journal.append(entry)
            copied += 1
    target_journal.close()
    # The snapshots the records name, before the records (as apply writes them).
    from reconciler.state.snapshots import Snapshots, referenced

    kept_there = set(Snapshots(target, destination.backend).sizes())
    for sha in sorted(referenced(loaded.lookups) - kept_there):
        stored = loaded.backend.read(Snapshots.key(sha))
        if stored is not None:
            destination.backend.write(Snapshots.key(sha), stored.data)
    missing = {a: r for a, r in loaded.lookups.items() if a not in destination.lookups}
    destination.record_many(missing)
    destination.commit()
    return Migration(
        records=len(missing),
        entries=copied,
        records_there=len(loaded.lookups) - len(missing),
        entries_there=len(entries) - copied,
    )


def rekey(location: str) -> tuple[int, int]:
    """Seal everything kept at ``location`` again with the current state key (objects sealed with
    a key of ``RECONCILER_STATE_OLD_KEYS``, or kept plain, are read as they are); returns (objects
    rewritten, journal entries rewritten). Run under the state's lock."""
    from reconciler.state.crypto import keyring_from
    from reconciler.state.journal import Journal, ObjectJournal
    from reconciler.state.snapshots import PREFIX

    if keyring_from() is None:
        raise StateError(
            "state rekey needs the new key in RECONCILER_STATE_KEY (or --state-key-file)",
            hint="and the key it replaces, if any, in RECONCILER_STATE_OLD_KEYS",
        )
    state = State.load(location)
    state.commit()  # the record logs folded in (and dropped), so only whole objects remain
    backend, key = state.backend, state._key
    rewritten = 0
    current = backend.read(key)
    if current is not None:
        backend.write(key, current.data, etag=current.etag)
        rewritten += 1
    journal = Journal.for_state(location)
    entries = list(journal.entries())
    journal_objects = (
        sorted(backend.sizes("journal/")) if isinstance(journal, ObjectJournal) else []
    )
    for name in [*sorted(backend.sizes(PREFIX)), *journal_objects]:
        stored = backend.read(name)
        if stored is not None:
            backend.write(name, stored.data)
            rewritten += 1
    if not isinstance(journal, ObjectJournal) and journal.path.exists():
        journal.rewrite(entries)
    return rewritten, len(entries)
