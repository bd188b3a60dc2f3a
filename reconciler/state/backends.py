"""Where the state, its lock, its record log and the audit journal live: a folder, or an object store.

A *location* is a path (``.reconciler/state.json``, today's default) or a URL: ``s3://BUCKET/PREFIX``
(AWS S3 or any S3-compatible store; the standard ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included,
are honoured), ``gs://BUCKET/PREFIX`` or ``az://CONTAINER/PREFIX``. Object stores go through
`obstore` (an optional extra: ``pip install 'devo-reconciler[s3]'``), which gives the two conditional
writes everything here is built on:

* **create-if-absent** (``mode="create"``): the lock, and one object per record-log entry;
* **compare-and-swap** on the ETag (``mode={"e_tag": ...}``): every write of the compacted state.

Layout, for a local ``DIR/state.json`` and for ``s3://BUCKET/PREFIX``::

    DIR/state.json            PREFIX/state.json              the compacted state (CAS)
    DIR/state.json.lock       PREFIX/state.lock              apply's lock (create-if-absent)
    DIR/state.json.log/RUN    PREFIX/log/RUN/SEQ.json        records written during a run
    DIR/journal.jsonl         PREFIX/journal/RUN.jsonl       the audit journal, per run
                              PREFIX/journal/RUN/SEQ.json    (entries of a run not yet compacted)

A local folder emulates the conditions with ``O_EXCL`` and an ``flock``-guarded read-compare-replace,
with the sha256 of the content as its ETag.

Every object-store operation is bounded (`ObjectBounds`): an endpoint that takes connections and
never answers fails the run in under a minute, where obstore's own defaults (10 retries within
3 minutes, 30 s a request) would hold it for minutes without a word.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.errors import SettingsError, StateError
from reconciler.settings import is_url, local_state_file
from reconciler.state.crypto import MAGIC, Keyring, keyring_from, seal, seal_line, unseal

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig


class AlreadyExists(Exception):
    """A create-if-absent write found the object there."""


class Precondition(Exception):
    """A compare-and-swap write found another version than the one it read."""


@dataclass(frozen=True)
class Stored:
    """An object's bytes and its version tag."""

    data: bytes
    etag: str


class Backend(Protocol):
    """The few operations state, lock and journal need."""

    description: str

    def read(self, key: str) -> Stored | None: ...

    def write(self, key: str, data: bytes, *, create: bool = False, etag: str | None = None) -> str:
        """Write ``key``; ``create``: only if absent; ``etag``: only if still that version."""
        ...

    def append(self, key: str, run: str, seq: int, data: bytes) -> None:
        """Add one entry to the append-only log ``key`` of run ``run`` (O(1))."""
        ...

    def log_entries(self, key: str) -> list[tuple[str, str, bytes]]:
        """Every entry of the log ``key`` as (run, name, bytes), oldest run first."""
        ...

    def drop_log(self, key: str, run: str) -> None:
        """Remove run ``run``'s entries of log ``key``."""
        ...

    def log_runs(self, key: str) -> list[str]:
        """The runs that have entries in log ``key``."""
        ...

    def delete(self, key: str) -> None: ...

    def sizes(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` (a folder, ending in ``/``) with its size in bytes."""
        ...

    def lock_key(self, key: str) -> str:
        """Where the lock of the state ``key`` lives."""
        ...


def new_run_id() -> str:
    """A run's id, which names its log entries: sortable by time, unique across machines."""
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{secrets.token_hex(4)}"


def open_backend(location: str) -> tuple[Backend, str]:
    """The backend for a state location, and the key of the state in it; sealed (see
    ``reconciler.state.crypto``) when a state key is set."""
    backend: Backend
    if is_url(location):
        backend, key = ObjectBackend(location), "state.json"
    else:
        path = local_state_file(location)
        backend, key = LocalBackend(path.parent), path.name
    return SealedBackend(backend, keyring_from()), key


class SealedBackend:
    """A backend whose objects and log entries are encrypted on the way in and decrypted on the
    way out (plain ones are read as they are); the lock is left plain: it holds no data. With no
    key, it writes plain, and a sealed object it meets is an error that says so (never garbage
    read as a state)."""

    def __init__(self, inner: Backend, keyring: Keyring | None) -> None:
        self.inner = inner
        self.keyring = keyring
        self.description = inner.description

    @staticmethod
    def _plain(key: str) -> bool:
        return key.endswith(".lock")

    def read(self, key: str) -> Stored | None:
        stored = self.inner.read(key)
        if stored is None or self._plain(key):
            return stored
        return Stored(unseal(self.keyring, key, stored.data), stored.etag)

    def write(self, key: str, data: bytes, *, create: bool = False, etag: str | None = None) -> str:
        keyring = self.keyring
        body = data if self._plain(key) or keyring is None else seal(keyring, key, data)
        return self.inner.write(key, body, create=create, etag=etag)

    def append(self, key: str, run: str, seq: int, data: bytes) -> None:
        if self.keyring is not None:
            data = seal_line(self.keyring, f"{key}/{run}", data)
        self.inner.append(key, run, seq, data)

    def log_entries(self, key: str) -> list[tuple[str, str, bytes]]:
        return [
            (
                run,
                name,
                unseal(self.keyring, name if raw.startswith(MAGIC) else f"{key}/{run}", raw),
            )
            for run, name, raw in self.inner.log_entries(key)
        ]

    def drop_log(self, key: str, run: str) -> None:
        self.inner.drop_log(key, run)

    def log_runs(self, key: str) -> list[str]:
        return self.inner.log_runs(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def sizes(self, prefix: str) -> dict[str, int]:
        return self.inner.sizes(prefix)

    def lock_key(self, key: str) -> str:
        return self.inner.lock_key(key)


# --- a local folder ---------------------------------------------------------------------------


def _close_all(fds: dict[Path, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


class LocalBackend:
    """Files in one folder; logs are one append-only file per run under ``KEY.log/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)
        # A run's log stays open while the run appends to it (apply appends twice per change):
        # opening, checking the folder and closing each time were four system calls of six.
        self._logs: dict[Path, int] = {}
        self._logs_lock = threading.Lock()
        weakref.finalize(self, _close_all, self._logs)  # a run that never committed (killed)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> Stored | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        except OSError as exc:
            raise _io_error(self._path(key), exc) from exc
        return Stored(data, hashlib.sha256(data).hexdigest())

    @contextlib.contextmanager
    def _guard(self, key: str) -> Iterator[None]:
        """Serialise read-compare-replace of ``key`` between processes on this machine."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.guard", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, key: str, data: bytes, *, create: bool = False, etag: str | None = None) -> str:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # the root, or a folder in it
            if create:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    raise AlreadyExists(key) from None
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                return hashlib.sha256(data).hexdigest()
            with self._guard(key):
                if etag is not None:
                    current = self.read(key)
                    if current is None or current.etag != etag:
                        raise Precondition(key)
                write_atomically(path, data)
        except (AlreadyExists, Precondition):
            raise
        except OSError as exc:
            raise _io_error(path, exc) from exc
        return hashlib.sha256(data).hexdigest()

    def append(self, key: str, run: str, seq: int, data: bytes) -> None:
        path = self._path(f"{key}.log") / run
        try:
            # Under the lock, the write too: drop_log closing the file (and the number being
            # reused by another open) between the lookup and the write would be worse than any
            # wait. Apply's records come from one thread anyway.
            with self._logs_lock:
                fd = self._logs.get(path)
                if fd is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    fd = self._logs[path] = os.open(
                        path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
                    )
                os.write(fd, data.rstrip(b"\n") + b"\n")  # O_APPEND: one write, one whole line
                os.fsync(fd)
        except OSError as exc:
            raise _io_error(path, exc) from exc

    def log_runs(self, key: str) -> list[str]:
        folder = self._path(f"{key}.log")
        try:
            return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise _io_error(folder, exc) from exc

    def log_entries(self, key: str) -> list[tuple[str, str, bytes]]:
        entries: list[tuple[str, str, bytes]] = []
        for run in self.log_runs(key):
            path = self._path(f"{key}.log") / run
            try:
                lines = path.read_bytes().splitlines()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _io_error(path, exc) from exc
            entries.extend(
                (run, f"{run}:{i}", line) for i, line in enumerate(lines) if line.strip()
            )
        return entries

    def drop_log(self, key: str, run: str) -> None:
        path = self._path(f"{key}.log") / run
        with self._logs_lock:
            fd = self._logs.pop(path, None)
            if fd is not None:
                os.close(fd)
        path.unlink(missing_ok=True)

    def lock_key(self, key: str) -> str:
        return f"{key}.lock"  # beside the state file: DIR/state.json.lock

    def sizes(self, prefix: str) -> dict[str, int]:
        folder = self._path(prefix)
        try:
            return {
                prefix + p.name: p.stat().st_size
                for p in folder.iterdir()
                if p.is_file() and not p.name.startswith(".")
            }
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as exc:
            raise _io_error(folder, exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise _io_error(self._path(key), exc) from exc


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temp file, fsync and ``os.replace``: readers see the old file or the new one.

    The one atomic write of the tool (state files, saved plans).
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _io_error(path: Path, exc: OSError) -> StateError:
    return StateError(
        f"cannot use {path}: {exc.strerror or exc}",
        hint=f"{path.parent}/ must be a folder this user can read and write "
        "(or point --state / RECONCILER_STATE elsewhere)",
    )


# --- an object store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectBounds:
    """How long one object-store operation may take, retries included.

    A request that cannot connect within ``connect`` seconds, or is not answered within
    ``request`` seconds, fails; a failure the store may recover from (a timeout, a refused
    connection, a 5xx) is retried up to ``retries`` times with backoff, while under ``total``
    seconds have passed since the first attempt. The worst case (an endpoint that never answers)
    is about ``total + request`` seconds.
    """

    connect: float = 5.0
    request: float = 20.0
    retries: int = 5
    total: float = 30.0


class ObjectBackend:
    """Objects under a prefix of a bucket, through obstore; logs are one object per entry."""

    def __init__(self, url: str, bounds: ObjectBounds = ObjectBounds()) -> None:
        try:
            import obstore
            from obstore.store import from_url
        except ImportError:
            raise SettingsError(
                f"state location {url} needs the object-store extra",
                hint="pip install 'devo-reconciler[s3]' (it adds obstore)",
            ) from None
        self._obstore = obstore
        self.description = url
        client: ClientConfig = {
            "connect_timeout": timedelta(seconds=bounds.connect),
            "timeout": timedelta(seconds=bounds.request),
        }
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if url.startswith("s3://") and endpoint and endpoint.startswith("http://"):
            client["allow_http"] = True  # a local S3-compatible server
        retry: RetryConfig = {
            "max_retries": bounds.retries,
            "retry_timeout": timedelta(seconds=bounds.total),
        }
        try:
            self._store = from_url(url, client_options=client, retry_config=retry)
        except Exception as exc:  # obstore raises its own errors for bad URLs and settings
            raise SettingsError(
                f"cannot use state location {url}: {type(exc).__name__}",
                hint="s3://BUCKET/PREFIX with the AWS_* variables set (or gs://, az://)",
            ) from None

    def _fail(self, what: str, key: str, exc: Exception) -> StateError:
        return StateError(
            f"{what} {self.description}/{key} failed: {_cause(exc)}",
            hint="check the endpoint, the bucket, its permissions and the AWS_* variables",
        )

    def read(self, key: str) -> Stored | None:
        try:
            result = self._obstore.get(self._store, key)
            data = bytes(result.bytes())
        except FileNotFoundError as exc:
            if _s3_code(exc) == "NoSuchBucket":  # not "no state yet": a wrong bucket name
                raise self._fail("reading", key, exc) from None
            return None
        except Exception as exc:
            raise self._fail("reading", key, exc) from None
        return Stored(data, str(result.meta.get("e_tag") or hashlib.sha256(data).hexdigest()))

    def write(self, key: str, data: bytes, *, create: bool = False, etag: str | None = None) -> str:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = "create" if create else ({"e_tag": etag} if etag is not None else "overwrite")
        try:
            result = self._obstore.put(self._store, key, data, mode=mode)
        except AlreadyExistsError:
            # obstore sends a create again when its answer is lost; if the first one landed, the
            # second meets it. The same bytes there are this very write (every create's bytes
            # are its own: the lock carries this run's id, a log entry its run and number).
            found = self.read(key)
            if found is not None and found.data == data:
                return found.etag
            raise AlreadyExists(key) from None
        except PreconditionError:
            raise Precondition(key) from None
        except Exception as exc:
            raise self._fail("writing", key, exc) from None
        return str(result.get("e_tag") or hashlib.sha256(data).hexdigest())

    def append(self, key: str, run: str, seq: int, data: bytes) -> None:
        name = f"{_log_prefix(key)}/{run}/{seq:09d}.json"
        try:
            self.write(name, data, create=True)
        except AlreadyExists:
            raise StateError(
                f"record log entry {self.description}/{name} exists with other content",
                hint="another run wrote under this run's id: run apply again",
            ) from None

    def _list(self, prefix: str) -> list[str]:
        try:
            return sorted(
                str(item["path"])
                for batch in self._obstore.list(self._store, prefix=prefix)
                for item in batch
            )
        except Exception as exc:
            raise self._fail("listing", prefix, exc) from None

    def log_runs(self, key: str) -> list[str]:
        prefix = _log_prefix(key) + "/"
        return sorted({path[len(prefix) :].split("/", 1)[0] for path in self._list(prefix)})

    def log_entries(self, key: str) -> list[tuple[str, str, bytes]]:
        prefix = _log_prefix(key) + "/"
        entries: list[tuple[str, str, bytes]] = []
        for path in self._list(prefix):
            found = self.read(path)
            if found is not None:
                entries.append((path[len(prefix) :].split("/", 1)[0], path, found.data))
        return entries

    def drop_log(self, key: str, run: str) -> None:
        paths = self._list(f"{_log_prefix(key)}/{run}/")
        if not paths:
            return
        try:  # S3: one DeleteObjects request per 1,000 entries, not one per entry
            self._obstore.delete(self._store, paths)
        except FileNotFoundError:  # a store that says so of an entry dropped by another commit
            for path in paths:
                self.delete(path)
        except Exception as exc:
            raise self._fail("deleting", paths[0], exc) from None

    def lock_key(self, key: str) -> str:
        return "state.lock"  # PREFIX/state.lock

    def sizes(self, prefix: str) -> dict[str, int]:
        try:
            return {
                str(item["path"]): int(item["size"])
                for batch in self._obstore.list(self._store, prefix=prefix)
                for item in batch
            }
        except Exception as exc:
            raise self._fail("listing", prefix, exc) from None

    def delete(self, key: str) -> None:
        try:
            self._obstore.delete(self._store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._fail("deleting", key, exc) from None


def _s3_code(exc: Exception) -> str | None:
    """The S3 error code in obstore's error (``NoSuchBucket``, ``AccessDenied``...), if any."""
    found = re.search(r"<Code>([A-Za-z]{1,64})</Code>", str(exc))
    return found.group(1) if found else None


def _cause(exc: Exception) -> str:
    """What went wrong, in words picked out of obstore's error, never its text: the text holds
    the request's URL and the response's body, and S3 puts the access key id in that body."""
    text = str(exc)
    words = [type(exc).__name__]
    if "kind: Timeout" in text or "TimedOut" in text:
        words.append("timed out")
    elif "ConnectionRefused" in text:
        words.append("connection refused")
    elif "kind: Connect" in text:
        words.append("could not connect")
    status = re.search(r"status code: (\d{3})(?: ([A-Za-z][A-Za-z ]{0,40}?))?:", text)
    if status:
        words.append(" ".join(filter(None, ["HTTP", status.group(1), status.group(2)])))
    code = _s3_code(exc)
    if code:
        words.append(code)
    retries = re.search(r"after (\d+) retries", text)
    if retries:
        words.append(f"after {retries.group(1)} retries")
    return ", ".join(words)


def _log_prefix(key: str) -> str:
    """``state.json`` → ``log``, ``journal`` → ``journal``: the folder of a log's objects."""
    return "log" if key == "state.json" else key
