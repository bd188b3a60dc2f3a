"""The cyclic garbage collector, paused while a run builds its big graph of objects.

Loading 10,000 specs and planning them makes a few million objects that all live to the end of
the run; the collector, triggered by every 700 allocations, walks more and more of them to find
almost nothing: 1.3 s of a 3.0 s plan in a measured run (``bench/run.py``, section 9). Paused, it
costs nothing; reference counting still frees what is dropped.

When the pause ends, a small graph is left to the collector as usual (cycles made meanwhile are
collected). A big one (``FREEZE_AT`` new objects the collector tracks, which a command keeps to its
end) is frozen first (``gc.freeze``): otherwise the first collections after the pause walked all of
it once more, to find almost nothing again (0.1 s of a 1.6 s plan of 10,000 lookups). Cycles made
during the pause then stay in memory until the process ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: New tracked objects from which the graph a pause leaves is frozen, not collected: a plan of
#: 1,000 lookups leaves about 46,000 (of 10,000, ten times that); the test suite's, fewer.
FREEZE_AT = 100_000


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block (nested blocks: the outermost one resumes it)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_count()[0] >= FREEZE_AT:
            gc.freeze()
        gc.enable()


__all__ = ["FREEZE_AT", "collector_paused"]
