"""The state's lock: one object beside the state, created only if absent (so two applies cannot both
hold it), holding who took it (``LockInfo``); ``reconciler state unlock`` removes a stale one."""

from __future__ import annotations

import json
import secrets as secrets_module
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, ValidationError

from reconciler.errors import StateError
from reconciler.state.backends import (
    AlreadyExists,
    Backend,
    open_backend,
)

#: How often a run waiting for the state lock says so.
WAIT_NOTICE_EVERY = 30.0


class LockInfo(BaseModel):
    """Who holds the state's lock: written into the lock object itself, and read back as a model
    (a lock another tool wrote, or a damaged one, is read as far as it can be)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    actor: str
    host: str
    pid: int
    created: str  # ISO-8601, UTC
    command: str = "apply"

    def age(self, now: datetime | None = None) -> str:
        """``3m12s`` since the lock was taken."""
        try:
            since = datetime.fromisoformat(self.created)
        except ValueError:
            return "unknown"
        seconds = max(0, int(((now or datetime.now(UTC)) - since).total_seconds()))
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return (
            (f"{hours}h" if hours else "")
            + (f"{minutes}m" if hours or minutes else "")
            + f"{secs}s"
        )

    def gone(self) -> bool:
        """True when the holder ran on this host and its process no longer exists."""
        import os
        import socket

        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def describe(self) -> str:
        """``lock 1a2b… held by ci-bot on runner-7 (pid 4242) for 3m12s``."""
        return (
            f"lock {self.id} held by {self.actor} on {self.host} (pid {self.pid}) for {self.age()}"
        )


class LockedError(StateError):
    """Another apply holds the state's lock."""

    def __init__(self, location: str, holder: LockInfo | None) -> None:
        who = holder.describe() if holder else "a lock whose holder cannot be read"
        if holder is not None and holder.gone():
            who += "; that process is no longer running on this host: the lock was left behind"
        super().__init__(
            f"the state {location} is locked: {who}",
            hint="wait for that apply to finish, or pass --lock-timeout S to wait for it; if it "
            "was killed, release its lock with: reconciler state unlock "
            + (holder.id if holder else "LOCK_ID"),
        )
        self.holder = holder


class StateLock:
    """Apply's lock on a state: an object written create-if-absent, removed when apply ends."""

    def __init__(self, location: str, actor: str) -> None:
        import os
        import socket

        self.location = location
        self.backend, key = open_backend(location)
        self.key = self.backend.lock_key(key)
        self.info = LockInfo(
            id=secrets_module.token_hex(8),
            actor=actor,
            host=socket.gethostname(),
            pid=os.getpid(),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.held = False

    def holder(self) -> LockInfo | None:
        """Who holds the lock now (None: nobody, or unreadable)."""
        return read_lock(self.backend, self.key)

    async def acquire(
        self,
        timeout: float = 0.0,
        *,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        waiting: Callable[[str], None] | None = None,
    ) -> None:
        """Take the lock, waiting up to ``timeout`` seconds; ``LockedError`` naming the holder.

        While it waits, ``waiting`` is told who holds the lock: at once, then every
        ``WAIT_NOTICE_EVERY`` seconds (a CI log must not look hung)."""
        import asyncio

        sleep = sleep or asyncio.sleep
        deadline = clock() + max(0.0, timeout)
        data = json.dumps(self.info.model_dump(), sort_keys=True).encode()
        delay = 0.5
        next_notice = clock()
        while True:
            try:
                self.backend.write(self.key, data, create=True)
            except AlreadyExists:
                if clock() >= deadline:
                    raise LockedError(self.location, self.holder()) from None
                if waiting is not None and clock() >= next_notice:
                    holder = self.holder()
                    who = (
                        f"{holder.actor} since {holder.created} (pid {holder.pid} on {holder.host})"
                        if holder is not None
                        else "another run"
                    )
                    left = max(0.0, deadline - clock())
                    waiting(
                        f"waiting for the state lock held by {who}... ({left:.0f} s left of "
                        "--lock-timeout)"
                    )
                    next_notice = clock() + WAIT_NOTICE_EVERY
                await sleep(min(delay, max(0.0, deadline - clock())))
                delay = min(delay * 1.5, 5.0)
                continue
            self.held = True
            return

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        if not self.held:
            return
        current = self.holder()
        if current is not None and current.id == self.info.id:
            self.backend.delete(self.key)
        self.held = False


def read_lock(backend: Backend, key: str) -> LockInfo | None:
    """The lock's holder, or None."""
    stored = backend.read(key)
    if stored is None:
        return None
    try:
        return LockInfo.model_validate_json(stored.data)
    except (ValidationError, UnicodeDecodeError, RecursionError):
        return LockInfo(id="?", actor="?", host="?", pid=0, created="")


def unlock(location: str, lock_id: str) -> LockInfo:
    """Release a lock left behind by a killed apply; only the named one (``StateError`` else)."""
    backend, key = open_backend(location)
    lkey = backend.lock_key(key)
    holder = read_lock(backend, lkey)
    if holder is None:
        raise StateError(f"the state {location} is not locked")
    if holder.id != lock_id:
        raise StateError(
            f"the state {location} is locked by {holder.id}, not {lock_id}",
            hint=f"{holder.describe()}; unlock with that id if it is the one to release",
        )
    backend.delete(lkey)
    return holder
