"""The interpreter's thread switch interval for our server processes.

A worker runs Celery's consumer loop and the pool threads that store and route in one process;
a gateway runs its event loop, its node-channel thread and its store threads. Each database or
Redis round trip releases the GIL, and getting it back waits for whoever holds it to hit the
switch interval (CPython's default 5 ms): a batch of a few statements then waits tens of
milliseconds while the consumer thread parses the next messages (the "convoy effect").
A shorter interval hands the GIL back sooner. Measured in docs/performance.md.
"""

from __future__ import annotations

import sys


def apply_switch_interval(interval_ms: float) -> None:
    """Set the switch interval (``DELIVERY_GIL_SWITCH_MS``; 0 keeps Python's default)."""
    if interval_ms > 0:
        sys.setswitchinterval(interval_ms / 1000.0)
