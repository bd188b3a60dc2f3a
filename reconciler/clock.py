"""Time, injected: where the tool reads the time and where it waits.

Everything that waits (job polling, retries, the state lock) or stamps a time (records, journal
entries, outcome durations) takes a ``Clock``; tests pass one they move by hand, so a job that takes
two seconds in the emulator takes no time in the suite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Clock:
    """A source of time: ``monotonic`` for durations, ``wall`` for epoch seconds, and ``sleep``."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def now(self) -> datetime:
        """The wall time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.wall(), UTC)


SYSTEM_CLOCK = Clock()
