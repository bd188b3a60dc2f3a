"""The audit trail: one JSONL entry per change apply made (or tried), and its query for ``history``.

Entries follow the audit-log shape of ``seeds/004``: time, entity, user (actor), type, and a payload
of ``previous`` / ``additions`` / ``deletions``. Configs are canonical, so secrets never appear. The
journal lives beside the state file (``journal.jsonl``) unless ``RECONCILER_JOURNAL`` says otherwise;
appends are single ``write`` calls of one line, so concurrent appenders do not interleave lines.
"""

from __future__ import annotations

import fnmatch
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from reconciler import gitrepo
from reconciler.errors import StateError
from reconciler.state.crypto import Keyring, keyring_from, seal_line, unseal


class JournalEntry(BaseModel):
    """One change apply made or tried (one JSON line of the journal), validated when read."""

    model_config = ConfigDict(extra="ignore")

    id: str = ""
    time: StrictStr
    timestamp: StrictInt
    actor: str = ""
    domain: StrictStr
    lookup: StrictStr
    action: StrictStr
    outcome: str = ""
    message: str = ""
    jobId: str | None = None
    commit: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    type: str = "lookup"

    @field_validator("id", "actor", "outcome", "message", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str:
        return "" if value is None else str(value)

    @field_validator("payload", mode="before")
    @classmethod
    def _payload(cls, value: Any) -> Any:
        return value if isinstance(value, dict) else {}

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, value: Any) -> Any:
        return value or "lookup"

    @property
    def address(self) -> str:
        """``domain/lookup``."""
        return f"{self.domain}/{self.lookup}"


class Journal:
    """Append-only JSONL file of JournalEntry (the journal of a local state)."""

    def __init__(self, path: Path, keyring: Keyring | None = None) -> None:
        self.path = path
        self.skipped: list[int] = []
        self.keyring = keyring  # set: each line is sealed (see reconciler.state.crypto)

    @property
    def where(self) -> str:
        """Where the journal is, for messages."""
        return str(self.path)

    @staticmethod
    def for_state(location: str, env: Mapping[str, str] | None = None) -> Journal:
        """The journal kept with a state: ``journal.jsonl`` beside a local state file (or
        ``RECONCILER_JOURNAL``), ``PREFIX/journal/`` in an object store."""
        from reconciler.settings import is_url, local_state_file

        if is_url(location):
            return ObjectJournal(location)
        return Journal(journal_path(local_state_file(location), env), keyring_from(env))

    def close(self) -> None:
        """End of a run: nothing to compact in a local file."""
        return None

    def _line(self, entry: JournalEntry) -> str:
        line = json.dumps(entry.model_dump(mode="json"), sort_keys=True) + "\n"
        if self.keyring is not None:
            line = seal_line(self.keyring, self.path.name, line.encode()).decode() + "\n"
        return line

    def rewrite(self, entries: list[JournalEntry]) -> None:
        """Replace the whole file at once (``state rekey``): a reader sees the old or the new."""
        from reconciler.state.backends import write_atomically

        write_atomically(self.path, "".join(self._line(e) for e in entries).encode())

    def append(self, entry: JournalEntry) -> None:
        """Append one entry as one line."""
        line = self._line(entry)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            try:
                fd = os.open(self.path, flags, 0o644)
            except FileNotFoundError:  # the first entry: its folder may not exist yet
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, flags, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise StateError(
                f"cannot write the journal {self.path}: {exc.strerror or exc}",
                hint=f"{self.path.parent}/ must be a folder this user can write",
            ) from exc

    def entries(self) -> Iterator[JournalEntry]:
        """Every entry, oldest first. Lines that are not entries (a torn last line after a crash,
        an edit by hand) are skipped, and their numbers kept in ``skipped`` for one warning."""
        self.skipped = []
        if not self.path.exists():
            return
        try:
            with self.path.open(encoding="utf-8", errors="replace") as handle:
                for number, line in enumerate(handle, 1):
                    if not line.strip():
                        continue
                    if line.startswith("enc1:"):
                        line = unseal(self.keyring, self.path.name, line.encode()).decode()
                    entry = _entry(line)
                    if entry is None:
                        self.skipped.append(number)
                    else:
                        yield entry
        except OSError as exc:
            raise StateError(f"cannot read journal {self.path}: {exc.strerror}") from exc


def _entry(line: str) -> JournalEntry | None:
    """One journal line as an entry, or None when it is not one (torn, or another shape)."""
    try:
        return JournalEntry.model_validate_json(line)
    except ValidationError:
        return None


class ObjectJournal(Journal):
    """The journal in an object store: one object per entry while a run goes on (so a killed run
    loses nothing), compacted into one ``journal/RUN.jsonl`` object per run when it ends."""

    def __init__(self, location: str) -> None:
        from reconciler.state.backends import new_run_id, open_backend

        super().__init__(Path("journal"))
        self.backend, _ = open_backend(location)
        self.location = location
        self.run = new_run_id()
        self.lines: list[bytes] = []
        self._lock = threading.Lock()  # apply appends from worker threads

    @property
    def where(self) -> str:
        return f"{self.location}/journal/"

    def append(self, entry: JournalEntry) -> None:
        line = json.dumps(entry.model_dump(mode="json"), sort_keys=True).encode()
        with self._lock:
            self.lines.append(line)
            seq = len(self.lines)
        self.backend.append("journal", self.run, seq, line)

    def close(self) -> None:
        """Write the run's entries as one object and drop the per-entry ones."""
        if not self.lines:
            return
        import contextlib

        from reconciler.state.backends import AlreadyExists

        body = b"\n".join(self.lines) + b"\n"
        with contextlib.suppress(AlreadyExists):  # written already by an earlier attempt
            self.backend.write(f"journal/{self.run}.jsonl", body, create=True)
        self.backend.drop_log("journal", self.run)
        self.lines = []

    def entries(self) -> Iterator[JournalEntry]:
        self.skipped = []
        found: list[JournalEntry] = []
        number = 0
        for _, name, raw in self.backend.log_entries("journal"):
            for line in raw.splitlines() if name.endswith(".jsonl") else [raw]:
                if not line.strip():
                    continue
                number += 1
                entry = _entry(line.decode("utf-8", errors="replace"))
                if entry is None:
                    self.skipped.append(number)
                else:
                    found.append(entry)
        found.sort(key=lambda e: (e.timestamp, e.id))
        yield from found


#: ``--action`` accepts the journal's words and the plan's (``add``, ``change``, ``destroy``).
ACTIONS = {
    "create": "create",
    "add": "create",
    "update": "update",
    "change": "update",
    "delete": "delete",
    "destroy": "delete",
    "no-op": "no-op",
}


@dataclass(frozen=True)
class HistoryQuery:
    """Filters and paging of ``reconciler history``."""

    name: str | None = None  # glob on the lookup name or on domain/name
    domain: str | None = None
    action: str | None = None
    since: int | None = None  # epoch ms, inclusive
    until: int | None = None  # epoch ms, exclusive
    offset: int = 0
    page_size: int = 50

    def matches(self, entry: JournalEntry) -> bool:
        """True when ``entry`` passes every filter."""
        if self.name and not (
            fnmatch.fnmatchcase(entry.lookup, self.name)
            or fnmatch.fnmatchcase(entry.address, self.name)
        ):
            return False
        if self.domain and entry.domain != self.domain:
            return False
        if self.action and entry.action != ACTIONS.get(self.action, self.action):
            return False
        if self.since is not None and entry.timestamp < self.since:
            return False
        return not (self.until is not None and entry.timestamp >= self.until)


def query(journal: Journal, q: HistoryQuery) -> dict[str, Any]:
    """``{"totalResults": n, "offset": o, "results": [...]}``, newest first."""
    matching = [e for e in journal.entries() if q.matches(e)]
    matching.reverse()
    page = matching[q.offset : q.offset + q.page_size]
    return {
        "totalResults": len(matching),
        "offset": q.offset,
        "results": [e.model_dump(mode="json") for e in page],
    }


def journal_path(state_path: Path, env: Mapping[str, str] | None = None) -> Path:
    """``RECONCILER_JOURNAL``, else ``journal.jsonl`` beside the state file."""
    env = os.environ if env is None else env
    configured = env.get("RECONCILER_JOURNAL")
    return Path(configured) if configured else state_path.parent / "journal.jsonl"


#: Who applies, in this order: the tool's own variable, then each CI's (GitHub, GitLab, Azure
#: Pipelines, Buildkite).
ACTOR_VARIABLES = (
    "RECONCILER_ACTOR",
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "BUILD_REQUESTEDFOR",
    "BUILDKITE_BUILD_CREATOR",
)
#: The commit a CI run checked out (GitHub, GitLab).
COMMIT_VARIABLES = ("GITHUB_SHA", "CI_COMMIT_SHA")


def current_actor(folder: Path, env: Mapping[str, str] | None = None) -> str:
    """Who is applying: the CI's actor variables, else git's user (as the repository holding
    ``folder`` sees it), else the login name."""
    env = os.environ if env is None else env
    for name in ACTOR_VARIABLES:
        if env.get(name):
            return env[name]
    email = gitrepo.user_email(folder)
    if email:
        return email
    return env.get("USER") or env.get("USERNAME") or "unknown"


def current_commit(folder: Path, env: Mapping[str, str] | None = None) -> str | None:
    """The git commit being applied: the CI's variable, else the commit checked out in the
    repository holding ``folder`` (the specs' folder, not the one the command started in)."""
    env = os.environ if env is None else env
    for name in COMMIT_VARIABLES:
        if env.get(name):
            return env[name]
    return gitrepo.head_commit(folder)
