"""Wall-clock helpers: the only place I/O-side code reads the time for stored timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def utcnow() -> datetime:
    return datetime.now(UTC)


def later(seconds: float, now: datetime | None = None) -> datetime:
    return (now or utcnow()) + timedelta(seconds=seconds)


class DatabaseAlignedClock:
    """This process's wall clock shifted to agree with the database's (seconds since epoch).

    Deadlines are written by one process and compared by others on the database's clock
    (the sweep's claim); a worker whose clock runs 5 s slow would otherwise write deadlines
    that pass 5 s early, and one 5 s fast would hold in-flight messages 5 s too long.
    ``calibrate`` is fed a reading of the database's clock taken between two local readings.
    """

    def __init__(self, base: Callable[[], float] = time.time) -> None:
        self._base = base
        self.offset = 0.0

    def __call__(self) -> float:
        return self._base() + self.offset

    def local(self) -> float:
        """The uncorrected reading (what ``calibrate`` compares with the database's)."""
        return self._base()

    def calibrate(self, db_now: float, local_before: float, local_after: float) -> None:
        self.offset = db_now - (local_before + local_after) / 2
