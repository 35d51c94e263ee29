"""The recovery sweep: messages whose ack deadline passed without an outcome are routed again.

It does not depend on in-memory timers: a worker that died holding a countdown task, a lost
frame, a crashed gateway, or a task stuck behind a broker's redelivery delay all leave a
message whose deadline is in the database. Every worker runs the sweep loop, and no process
can stall the others: work is claimed per message (``Store.claim_stalled``: the deadline moves
a lease ahead in one committed statement, rows locked by a concurrent claim are skipped), so a
worker paused or killed mid-sweep delays only the messages it claimed, by one lease. Deadlines
are compared on the database's clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from delivery.clock import DatabaseAlignedClock, utcnow
from delivery.routing.prune import maybe_prune
from delivery.routing.router import Router

log = logging.getLogger("delivery.sweep")

# How long a claimed message is this sweep's before another may take it: longer than routing
# a batch takes, short enough that a stalled claimer delays its messages by seconds only.
DEFAULT_LEASE_S = 5.0
# How often a worker re-reads the database's clock to align its own (deadlines it writes).
CALIBRATE_EVERY_S = 30.0


def sweep_once(router: Router, batch: int, lease_s: float = DEFAULT_LEASE_S) -> int:
    """Claim and re-route up to ``batch`` stalled messages. Returns how many it claimed."""
    stalled = router.store.claim_stalled(batch, lease_s, now=utcnow())
    for msg in stalled:
        try:
            router.route_stalled(msg)
        except Exception:  # one bad message must not stop the sweep; its claim runs out
            log.exception("sweep: re-routing %s failed", msg.id)
    router.store.expire_pending(utcnow(), batch)
    maybe_prune(router.store)  # at most once a minute per process
    if stalled:
        log.info("sweep: re-routed %d stalled message(s)", len(stalled))
    return len(stalled)


def calibrate(router: Router, clock: DatabaseAlignedClock) -> None:
    """Align ``clock`` (the router's) with the database's clock."""
    before = clock.local()
    db_now = router.store.db_time().timestamp()
    clock.calibrate(db_now, before, clock.local())
    if abs(clock.offset) > 1.0:
        log.warning("this process's clock is %.1fs off the database's; deadlines use the "
                    "database's", -clock.offset)


class SweepLoop:
    """Runs ``sweep_once`` every ``interval`` seconds in a daemon thread; with a
    :class:`DatabaseAlignedClock`, keeps it aligned with the database's clock."""

    def __init__(self, router: Router, interval: float, batch: int,
                 on_sweep: Callable[[int], None] | None = None, *,
                 lease_s: float = DEFAULT_LEASE_S,
                 clock: DatabaseAlignedClock | None = None) -> None:
        self.router = router
        self.interval = interval
        self.batch = batch
        self.lease_s = lease_s
        self.clock = clock
        self.on_sweep = on_sweep
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-sweep", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        next_calibration = 0.0
        while True:
            if self.clock is not None and time.monotonic() >= next_calibration:
                try:
                    calibrate(self.router, self.clock)
                    next_calibration = time.monotonic() + CALIBRATE_EVERY_S
                except Exception as exc:
                    log.warning("sweep: reading the database's clock failed (%s)",
                                type(exc).__name__)
            try:
                found = sweep_once(self.router, self.batch, self.lease_s)
                if self.on_sweep is not None and found > 0:
                    self.on_sweep(found)
            except Exception as exc:
                log.warning("sweep failed (%s); retrying in %.1fs", type(exc).__name__,
                            self.interval)
            if self._stop.wait(self.interval):
                return
