"""The emulator's persistent state: lookups and their jobs in SQLite (standard library).

Jobs are a *schedule* fixed when the job is created: a list of ``(offset seconds, code, message)``.
What a reader sees is the part of the schedule whose time has come, so jobs advance with the clock
across processes with no background thread. Effects that happen at the end of a job (a failed create
disappears, a failed update reverts, a finished delete removes the lookup) are applied lazily by
``settle``, which every request calls first (and the job-statuses route again, for a job that
ended since, before it shows that end). Writes run in ``BEGIN IMMEDIATE`` transactions so
several processes (an apply and a plan, or uvicorn workers) never corrupt the file.
"""

from __future__ import annotations

import functools
import io
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS lookups (
    domain TEXT NOT NULL, name TEXT NOT NULL, seq INTEGER NOT NULL,
    config TEXT NOT NULL, data TEXT NOT NULL, prev_config TEXT, prev_data TEXT,
    created REAL NOT NULL, owner TEXT NOT NULL, last_job TEXT,
    PRIMARY KEY (domain, name)
);
CREATE INDEX IF NOT EXISTS lookups_seq ON lookups (domain, seq);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, domain TEXT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
    created REAL NOT NULL, schedule TEXT NOT NULL, ends REAL NOT NULL, ok INTEGER NOT NULL,
    settled INTEGER NOT NULL DEFAULT 0, seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_lookup ON jobs (domain, name, seq);
CREATE INDEX IF NOT EXISTS jobs_pending ON jobs (settled, ends);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    domain TEXT NOT NULL, name TEXT NOT NULL, key TEXT NOT NULL, row TEXT NOT NULL,
    PRIMARY KEY (domain, name, key)
);
CREATE TABLE IF NOT EXISTS pending (
    domain TEXT NOT NULL, name TEXT NOT NULL, csv BLOB NOT NULL, config TEXT NOT NULL,
    PRIMARY KEY (domain, name)
);
"""

#: How an uploaded CSV's rows meet the stored ones (Devo's row protocol on ``deploy-csv``):
#: ``replace`` (no ``append``), ``add`` (``append`` with ``contribution: add``: upsert by key),
#: ``del`` (``append`` with ``contribution: del``: the uploaded keys are removed).
RowMode = str


@dataclass(frozen=True)
class Upload:
    """A checked upload kept whole: its rows go into the ``rows`` table only when something
    needs them one by one (a row-protocol upload after it, the rows control call), so a full
    upload of 100 MB costs one blob write, not millions of row inserts."""

    data: bytes
    config: dict[str, Any]
    rows: int  # data rows, keys distinct (ingest refuses duplicates)

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(key, row) of each data row."""
        from reconciler.emulator.ingest import read_rows

        return read_rows(io.BytesIO(self.data), self.config)


Rows = Iterable[tuple[str, str]] | Upload

Schedule = list[tuple[float, str, str]]


class Conflict(Exception):
    """The lookup already exists."""


class Missing(Exception):
    """The lookup does not exist."""


@dataclass
class LookupRow:
    """A stored lookup."""

    domain: str
    name: str
    seq: int
    config: dict[str, Any]
    data: dict[str, Any]
    created: float
    owner: str
    last_job: str | None


@functools.lru_cache(maxsize=65536)
def _decoded(text: str) -> Any:
    """``json.loads`` memoized by content, for the read paths: the same stored config, data or job
    schedule is decoded once, not once per list request. Callers must not mutate the result."""
    return json.loads(text)


@functools.lru_cache(maxsize=65536)
def iso_millis(epoch: float) -> str:
    """``2023-03-15T13:45:58.338``: the timestamp format of Devo's examples (UTC, no zone)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


class Store:
    """SQLite-backed lookups and jobs; safe to share between threads and processes."""

    def __init__(self, path: str | Path = ":memory:", clock: Callable[[], float] = time.time):
        self.clock = clock
        target = str(path)
        # In memory, no other process shares the database: its lock is only ever held for the
        # microseconds of a write (the app writes inline then, not from a worker thread).
        self.in_memory = target == ":memory:"
        if not self.in_memory:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout = 30000")
        if not self.in_memory:
            self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # --- transactions -----------------------------------------------------------------------

    def _write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result

    def _next(self, db: sqlite3.Connection, counter: str) -> int:
        db.execute(
            "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value = value + 1",
            (counter,),
        )
        return int(
            db.execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()[0]
        )

    # --- jobs ending ------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether some job's schedule has run out and its end-of-job effects are not applied."""
        with self._lock:
            return (
                self._db.execute(
                    "SELECT 1 FROM jobs WHERE settled = 0 AND ends <= ? LIMIT 1", (self.clock(),)
                ).fetchone()
                is not None
            )

    def settle(self) -> None:
        """Apply the end-of-job effects of every job whose schedule has run out."""
        if self.due():
            now = self.clock()
            self._write(lambda db: self._settle(db, now))

    def _settle(self, db: sqlite3.Connection, now: float) -> None:
        rows = db.execute(
            "SELECT id, domain, name, action, ok FROM jobs WHERE settled = 0 AND ends <= ? "
            "ORDER BY seq",
            (now,),
        ).fetchall()
        for job_id, domain, name, action, ok in rows:
            db.execute("UPDATE jobs SET settled = 1 WHERE id = ?", (job_id,))
            current = db.execute(
                "SELECT last_job, prev_config, prev_data FROM lookups WHERE domain = ? AND name = ?",
                (domain, name),
            ).fetchone()
            if current is None or current[0] != job_id:
                continue  # a newer job owns the lookup now
            if (action == "delete" and ok) or (action == "create" and not ok):
                db.execute("DELETE FROM lookups WHERE domain = ? AND name = ?", (domain, name))
            elif action == "update" and not ok and current[1] is not None:
                db.execute(
                    "UPDATE lookups SET config = ?, data = ? WHERE domain = ? AND name = ?",
                    (current[1], current[2], domain, name),
                )

    # --- lookups ----------------------------------------------------------------------------

    def _row(self, raw: tuple[Any, ...]) -> LookupRow:
        domain, name, seq, config, data, created, owner, last_job = raw
        return LookupRow(
            domain, name, seq, _decoded(config), _decoded(data), created, owner, last_job
        )

    _COLUMNS = "domain, name, seq, config, data, created, owner, last_job"

    def get(self, domain: str, name: str) -> LookupRow | None:
        """One lookup, or None."""
        with self._lock:
            raw = self._db.execute(
                f"SELECT {self._COLUMNS} FROM lookups WHERE domain = ? AND name = ?",
                (domain, name),
            ).fetchone()
        return self._row(raw) if raw else None

    def page(
        self, domains: list[str] | None, exclude: str | None, after: int, limit: int, shared: bool
    ) -> tuple[list[LookupRow], int]:
        """Lookups after cursor ``after`` (oldest first) and the next cursor (-1 on the last page).

        ``domains`` restricts owners (None: any); ``exclude`` drops one owner; ``shared`` keeps only
        lookups visible to all subdomains.
        """
        clauses, params = ["seq > ?"], [after]
        if domains is not None:
            clauses.append(f"domain IN ({','.join('?' * len(domains))})")
            params.extend(domains)  # type: ignore[arg-type]
        if exclude is not None:
            clauses.append("domain != ?")
            params.append(exclude)  # type: ignore[arg-type]
        if shared:
            clauses.append("json_extract(config, '$.visibility.type') = 'all-subdomains'")
        where = " AND ".join(clauses)
        with self._lock:
            raws = self._db.execute(
                f"SELECT {self._COLUMNS} FROM lookups WHERE {where} ORDER BY seq LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
        rows = [self._row(r) for r in raws[:limit]]
        next_token = rows[-1].seq if len(raws) > limit else -1
        return rows, next_token

    def create(
        self,
        domain: str,
        name: str,
        config: dict[str, Any],
        data: dict[str, Any],
        schedule: Schedule,
        owner: str,
        rows: Rows | None = None,
    ) -> str:
        """Create a lookup and its job; ``Conflict`` when it exists. ``rows`` replace any stored."""

        def run(db: sqlite3.Connection) -> str:
            exists = db.execute(
                "SELECT 1 FROM lookups WHERE domain = ? AND name = ?", (domain, name)
            ).fetchone()
            if exists:
                raise Conflict()
            if rows is not None:
                data["rows"] = self._apply_rows(db, domain, name, rows, "replace")
            job_id = self._add_job(db, domain, name, "create", schedule)
            db.execute(
                "INSERT INTO lookups VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?)",
                (
                    domain,
                    name,
                    self._next(db, "lookup"),
                    json.dumps(config),
                    json.dumps(data),
                    self.clock(),
                    owner,
                    job_id,
                ),
            )
            return job_id

        return str(self._write(run))

    def update(
        self,
        domain: str,
        name: str,
        config: dict[str, Any],
        data: dict[str, Any],
        schedule: Schedule,
        rows: Rows | None = None,
        mode: RowMode = "replace",
    ) -> str:
        """Replace a lookup's config and start its job; ``Missing`` when it does not exist.

        ``rows`` meet the stored ones as ``mode`` says; ``data["rows"]`` becomes their count.
        """

        def run(db: sqlite3.Connection) -> str:
            current = db.execute(
                "SELECT config, data FROM lookups WHERE domain = ? AND name = ?", (domain, name)
            ).fetchone()
            if current is None:
                raise Missing()
            if rows is not None:
                data["rows"] = self._apply_rows(db, domain, name, rows, mode)
            job_id = self._add_job(db, domain, name, "update", schedule)
            db.execute(
                "UPDATE lookups SET config = ?, data = ?, prev_config = ?, prev_data = ?, "
                "last_job = ? WHERE domain = ? AND name = ?",
                (
                    json.dumps(config),
                    json.dumps(data),
                    current[0],
                    current[1],
                    job_id,
                    domain,
                    name,
                ),
            )
            return job_id

        return str(self._write(run))

    def delete(self, domain: str, name: str, schedule: Schedule) -> str:
        """Start deleting a lookup; it disappears when the job succeeds. ``Missing`` if absent."""

        def run(db: sqlite3.Connection) -> str:
            exists = db.execute(
                "SELECT 1 FROM lookups WHERE domain = ? AND name = ?", (domain, name)
            ).fetchone()
            if not exists:
                raise Missing()
            job_id = self._add_job(db, domain, name, "delete", schedule)
            db.execute(
                "UPDATE lookups SET last_job = ? WHERE domain = ? AND name = ?",
                (job_id, domain, name),
            )
            return job_id

        return str(self._write(run))

    # --- rows -------------------------------------------------------------------------------

    @classmethod
    def _apply_rows(
        cls, db: sqlite3.Connection, domain: str, name: str, rows: Rows, mode: RowMode
    ) -> int:
        if isinstance(rows, Upload) and mode == "replace":
            db.execute("DELETE FROM rows WHERE domain = ? AND name = ?", (domain, name))
            db.execute(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?)",
                (domain, name, rows.data, json.dumps(rows.config)),
            )
            return rows.rows
        cls._materialize(db, domain, name)
        if isinstance(rows, Upload):
            rows = rows.pairs()
        if mode == "replace":
            db.execute("DELETE FROM rows WHERE domain = ? AND name = ?", (domain, name))
        if mode == "del":
            db.executemany(
                "DELETE FROM rows WHERE domain = ? AND name = ? AND key = ?",
                ((domain, name, key) for key, _ in rows),
            )
        else:
            db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)",
                ((domain, name, key, row) for key, row in rows),
            )
        found = db.execute(
            "SELECT COUNT(*) FROM rows WHERE domain = ? AND name = ?", (domain, name)
        ).fetchone()
        return int(found[0])

    @staticmethod
    def _materialize(db: sqlite3.Connection, domain: str, name: str) -> None:
        """The rows of a lookup's whole upload, if one is pending, into the ``rows`` table."""
        found = db.execute(
            "SELECT csv, config FROM pending WHERE domain = ? AND name = ?", (domain, name)
        ).fetchone()
        if found is None:
            return
        db.execute("DELETE FROM pending WHERE domain = ? AND name = ?", (domain, name))
        upload = Upload(found[0], json.loads(found[1]), 0)
        db.executemany(
            "INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?)",
            ((domain, name, key, row) for key, row in upload.pairs()),
        )

    def drop_rows(self, domain: str, name: str, keep: int = 0) -> int:
        """Out of band (someone else's hand, for tests): keep only the first ``keep`` rows by key;
        the lookup's ``numEntries`` follows. Returns the rows left."""

        def run(db: sqlite3.Connection) -> int:
            found = db.execute(
                "SELECT data FROM lookups WHERE domain = ? AND name = ?", (domain, name)
            ).fetchone()
            if found is None:
                raise Missing()
            self._materialize(db, domain, name)
            db.execute(
                "DELETE FROM rows WHERE domain = ? AND name = ? AND key NOT IN (SELECT key FROM "
                "rows WHERE domain = ? AND name = ? ORDER BY key LIMIT ?)",
                (domain, name, domain, name, keep),
            )
            left = int(
                db.execute(
                    "SELECT COUNT(*) FROM rows WHERE domain = ? AND name = ?", (domain, name)
                ).fetchone()[0]
            )
            data = json.loads(found[0])
            data["rows"] = left
            db.execute(
                "UPDATE lookups SET data = ? WHERE domain = ? AND name = ?",
                (json.dumps(data), domain, name),
            )
            return left

        left: int = self._write(run)
        return left

    def rows_of(self, domain: str, name: str) -> list[str]:
        """A lookup's rows (as CSV lines), in key order."""
        self._write(lambda db: self._materialize(db, domain, name))
        with self._lock:
            found = self._db.execute(
                "SELECT row FROM rows WHERE domain = ? AND name = ? ORDER BY key", (domain, name)
            ).fetchall()
        return [row for (row,) in found]

    # --- jobs -------------------------------------------------------------------------------

    def _add_job(
        self, db: sqlite3.Connection, domain: str, name: str, action: str, schedule: Schedule
    ) -> str:
        job_id = str(uuid.uuid1())
        ends = self.clock() + max(offset for offset, _, _ in schedule)
        ok = not schedule[-1][1].endswith(".err")
        db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
            (
                job_id,
                domain,
                name,
                action,
                self.clock(),
                json.dumps(schedule),
                ends,
                int(ok),
                self._next(db, "job"),
            ),
        )
        return job_id

    def successful_creates(self) -> dict[str, int]:
        """Per ``domain/name``: create jobs that did not end in ``*.err`` (lookups really created)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT domain || '/' || name, COUNT(*) FROM jobs "
                "WHERE action = 'create' AND ok = 1 GROUP BY domain, name"
            ).fetchall()
        return {address: int(count) for address, count in rows}

    def job_ids(self, domain: str, name: str, limit: int = 10) -> list[str]:
        """The last ``limit`` job ids of a lookup, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE domain = ? AND name = ? ORDER BY seq DESC LIMIT ?",
                (domain, name, limit),
            ).fetchall()
        return [r[0] for r in reversed(rows)]

    def job_statuses(
        self, domain: str, name: str, job_id: str, limit: int = 50
    ) -> list[dict[str, str]] | None:
        """The statuses a job has reached by now (last ``limit``, oldest first), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT created, schedule FROM jobs WHERE id = ? AND domain = ? AND name = ?",
                (job_id, domain, name),
            ).fetchone()
        if row is None:
            return None
        created, schedule = row
        now = self.clock()
        reached = [
            {
                "eventdata": iso_millis(created + offset),
                "domain": domain,
                "lookup": name,
                "msg": message,
                "code": code,
            }
            for offset, code, message in json.loads(schedule)
            if created + offset <= now
        ]
        return reached[-limit:]

    def latest_statuses(self, rows: list[LookupRow]) -> dict[str, dict[str, str]]:
        """The latest status of each row's last job, by job id, read in one query."""
        ids = [row.last_job for row in rows if row.last_job]
        if not ids:
            return {}
        with self._lock:
            found = self._db.execute(
                f"SELECT id, domain, name, created, schedule FROM jobs WHERE id IN ({','.join('?' * len(ids))})",
                ids,
            ).fetchall()
        now = self.clock()
        latest: dict[str, dict[str, str]] = {}
        for job_id, domain, name, created, schedule in found:
            reached = [s for s in _decoded(schedule) if created + s[0] <= now]
            if reached:
                offset, code, message = reached[-1]
                latest[job_id] = {
                    "eventdata": iso_millis(created + offset),
                    "domain": domain,
                    "lookup": name,
                    "msg": message,
                    "code": code,
                }
        return latest

    def latest_status(self, domain: str, name: str, job_id: str | None) -> dict[str, str] | None:
        """The latest status of a job (the lookup's ``lastStatus``), or None."""
        if job_id is None:
            return None
        statuses = self.job_statuses(domain, name, job_id)
        return statuses[-1] if statuses else None
