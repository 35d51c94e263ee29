"""Deferring the cyclic garbage collector during bulk operations.

Decoding a large frame, merging or extracting tens of thousands of entries
allocates one or more container objects per entry. Each ~700 allocations
trigger a young collection, and every ~50k survivors a *full* collection that
traverses every tracked object of the process (about 0.1 s with a large state
in memory), several times per operation. None of these objects can form a
cycle, so the collector has nothing to find: ``paused()`` disables it for the
duration of the operation. The allocations are still counted, so the next
collection runs right after the operation, once, over the new objects.

``gc.disable`` is process-wide. A thread that finds the collector already
disabled (by another bulk operation, or by the application) leaves it alone,
so the collector is re-enabled only by whoever disabled it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["BULK", "paused"]

BULK = 5_000
"""Entries (or events) from which an operation counts as bulk."""


@contextmanager
def paused(active: bool = True) -> Iterator[None]:
    if not active or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
