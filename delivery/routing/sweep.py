"""The recovery sweep: messages whose ack deadline passed without an outcome are routed again.

It does not depend on in-memory timers: a worker that died holding a countdown task, a lost
frame, a crashed gateway, or a task stuck behind Redis' visibility timeout all leave a message
whose deadline is in the database. Every worker runs the sweep loop; a lease makes one sweep
run at a time (PostgreSQL: a transaction-scoped advisory lock; SQLite: the embedded mode runs
in one process, so a process lock is enough). Each sweep handles at most ``batch`` messages.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import text

from delivery.clock import utcnow
from delivery.routing.router import Router

log = logging.getLogger("delivery.sweep")

SWEEP_LOCK_KEY = 0x64656C6976  # "deliv": the advisory lock id shared by all workers
_process_lock = threading.Lock()


def sweep_once(router: Router, batch: int) -> int:
    """One sweep under the lease. Returns how many stalled messages it re-routed (-1: busy)."""
    engine = router.store.engine
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            got = conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY}
            ).scalar()
            if not got:
                return -1
            return _sweep(router, batch)
    if not _process_lock.acquire(blocking=False):
        return -1
    try:
        return _sweep(router, batch)
    finally:
        _process_lock.release()


def _sweep(router: Router, batch: int) -> int:
    now = utcnow()
    stalled = router.store.stalled(now, batch)
    for msg in stalled:
        try:
            router.route_stalled(msg)
        except Exception:  # one bad message must not stop the sweep
            log.exception("sweep: re-routing %s failed", msg.id)
    router.store.expire_pending(now, batch)
    if stalled:
        log.info("sweep: re-routed %d stalled message(s)", len(stalled))
    return len(stalled)


class SweepLoop:
    """Runs ``sweep_once`` every ``interval`` seconds in a daemon thread."""

    def __init__(self, router: Router, interval: float, batch: int,
                 on_sweep: Callable[[int], None] | None = None) -> None:
        self.router = router
        self.interval = interval
        self.batch = batch
        self.on_sweep = on_sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                found = sweep_once(self.router, self.batch)
                if self.on_sweep is not None and found > 0:
                    self.on_sweep(found)
            except Exception:
                log.exception("sweep failed; retrying in %.1fs", self.interval)
