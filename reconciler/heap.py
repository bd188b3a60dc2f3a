"""The cyclic garbage collector, paused while a run builds its big graph of objects.

Loading 10,000 specs and planning them makes a few million objects that all live to the end of
the run; the collector, triggered by every 700 allocations, walks more and more of them to find
almost nothing: 1.3 s of a 3.0 s plan in a measured run (``bench/run.py``, section 9). Paused, it
costs nothing; reference counting still frees what is dropped, and cycles made meanwhile are
collected once it runs again.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


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
        gc.enable()


__all__ = ["collector_paused"]
