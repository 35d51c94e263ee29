"""The recovery sweep's share of pruning attempt rows: at most once per ``every_s`` per process
(the pruning itself: ``delivery.store.prune``)."""

from __future__ import annotations

import threading
import time

from delivery.store import Store
from delivery.store.prune import DEFAULT_KEEP, prune_attempts

_last = 0.0
_lock = threading.Lock()


def maybe_prune(store: Store, *, every_s: float = 60.0, keep: int = DEFAULT_KEEP,
                batch: int = 200) -> int:
    """:func:`prune_attempts` at most once per ``every_s`` in this process (the sweep calls it
    each round; the grouping query reads the attempts table, so not every half second)."""
    global _last
    with _lock:
        if time.monotonic() - _last < every_s:
            return 0
        _last = time.monotonic()
    return prune_attempts(store, keep=keep, batch=batch)
