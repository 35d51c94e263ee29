"""Flow control for producers (issue 14, item 3): admit a send, or refuse it with a retry hint,
from the backlog of the broker queue its task goes to. Pure: no I/O, no clock reads.

Under overload an unbounded queue turns every extra message into latency for all the
messages behind it. So a producer learns the queue's depth (the shell reads it: ``LLEN`` on
Redis, a passive ``queue_declare`` on RabbitMQ) and refuses new sends once it is over
``DELIVERY_MAX_BACKLOG`` — *before* storing anything, so what is accepted can be delivered in
time and what is refused was never accepted (the caller retries with the same
``client_msg_id``).

A reading is reused for ``refresh_s`` (a few ms), so the common case costs no round trip; in
between, this process counts the sends it admitted on top of the reading (``added``), so one
busy producer cannot overshoot the bound by a refresh period's worth of sends. Consecutive
readings give an estimate of the rate the workers drain the queue, from which a refused send
is told when to come back: the time the backlog needs to fall back to half the bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

# The retry hint's bounds (seconds): not sooner than the next few readings, not so late that
# an idle system keeps producers away.
MIN_RETRY_AFTER_S: Final = 0.1
MAX_RETRY_AFTER_S: Final = 30.0
# Until two readings give a drain rate, a refused send is told this.
DEFAULT_RETRY_AFTER_S: Final = 1.0
# Weight of the newest drain-rate sample in the moving average.
DRAIN_EWMA: Final = 0.3
# After the depth could not be read (the broker is down or slow), sends are admitted without
# a reading for this long before the next try: the probe must not add a failure of its own,
# nor a timeout per send (the enqueue reports a broker outage as it always did).
FAILURE_BACKOFF_S: Final = 1.0


@dataclass(frozen=True)
class FlowConfig:
    """``max_backlog``: the most tasks waiting in the queue before sends are refused; 0: flow
    control is off (every send is admitted, nothing is read). ``refresh_s``: how old a
    depth reading may get before it is read again."""

    max_backlog: int = 0
    refresh_s: float = 0.005

    def __post_init__(self) -> None:
        if self.max_backlog < 0:
            raise ValueError(f"max_backlog must be >= 0, got {self.max_backlog}")
        if not (math.isfinite(self.refresh_s) and self.refresh_s >= 0):
            raise ValueError(f"refresh_s must be a finite number >= 0, got {self.refresh_s}")

    @property
    def enabled(self) -> bool:
        return self.max_backlog > 0


@dataclass(frozen=True)
class Reading:
    """The queue's depth read at monotonic time ``at``, plus the sends this process admitted
    since (``added``), and the drain rate estimated so far (tasks/s; None: not known yet)."""

    depth: int
    at: float
    added: int = 0
    drain_per_s: float | None = None
    failed: bool = False  # the read failed at ``at``: no depth known (``depth`` is 0)

    @property
    def projected(self) -> int:
        """The depth as this process knows it: the reading plus its own sends since."""
        return self.depth + self.added


# -- decisions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admit:
    """Send it (and count it with :func:`admitted`)."""


@dataclass(frozen=True)
class Refresh:
    """The reading is missing or too old: read the depth, :func:`observe` it, decide again."""


@dataclass(frozen=True)
class Refuse:
    """Over the bound: refuse the send before storing anything; retry after ``retry_after_s``."""

    backlog: int
    bound: int
    retry_after_s: float


Decision = Admit | Refresh | Refuse

ADMIT: Final = Admit()
REFRESH: Final = Refresh()


def decide(config: FlowConfig, reading: Reading | None, now: float) -> Decision:
    """Admit, refuse, or ask for a fresh reading first."""
    if not config.enabled:
        return ADMIT
    if reading is not None and reading.failed:
        return ADMIT if reading.at <= now <= reading.at + FAILURE_BACKOFF_S else REFRESH
    if reading is None or now - reading.at > config.refresh_s or now < reading.at:
        return REFRESH
    backlog = reading.projected
    if backlog < config.max_backlog:
        return ADMIT
    return Refuse(backlog, config.max_backlog, retry_after(backlog, config.max_backlog,
                                                           reading.drain_per_s))


def decide_after_refresh(config: FlowConfig, reading: Reading) -> Admit | Refuse:
    """The decision on a reading just taken (never asks for another one)."""
    d = decide(config, reading, reading.at)
    assert not isinstance(d, Refresh)
    return d


def admitted(reading: Reading) -> Reading:
    """The reading once this process admitted (and enqueues) one more send."""
    return Reading(reading.depth, reading.at, reading.added + 1, reading.drain_per_s,
                   reading.failed)


def observe(previous: Reading | None, depth: int, now: float) -> Reading:
    """A new reading of ``depth`` at ``now``; the drain rate estimated from the previous one
    (what left the queue = what was there + what this process added - what is there now)."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if previous is None or previous.failed:
        return Reading(depth, now)
    rate = previous.drain_per_s
    elapsed = now - previous.at
    if elapsed > 0:
        drained = max(0, previous.projected - depth)
        sample = drained / elapsed
        if drained > 0 or previous.projected > 0:  # an empty, idle queue says nothing
            rate = sample if rate is None else (1 - DRAIN_EWMA) * rate + DRAIN_EWMA * sample
    return Reading(depth, now, 0, rate)


def observe_failure(previous: Reading | None, now: float) -> Reading:
    """The depth could not be read at ``now``: admit without a reading for FAILURE_BACKOFF_S
    (the drain rate estimated so far is kept)."""
    rate = previous.drain_per_s if previous is not None else None
    return Reading(0, now, 0, rate, failed=True)


def retry_after(backlog: int, bound: int, drain_per_s: float | None) -> float:
    """Seconds until the backlog has fallen to half the bound at the estimated drain rate,
    within [MIN_RETRY_AFTER_S, MAX_RETRY_AFTER_S]; DEFAULT_RETRY_AFTER_S while the rate is not
    known, MAX_RETRY_AFTER_S while nothing drains."""
    if drain_per_s is None:
        return DEFAULT_RETRY_AFTER_S
    if drain_per_s <= 0:
        return MAX_RETRY_AFTER_S
    excess = backlog - bound / 2
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, excess / drain_per_s))


def retry_after_header(seconds: float) -> str:
    """The ``Retry-After`` header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
