"""When the gateway records client acks, and in which batches, without I/O.

Acks are written to the store in batches: the first ack of a batch waits ``batch_s`` for
company; at most ``max_flushes`` batches are recorded at a time (one on SQLite, which has one
writer); with a flush running, another starts only for a full batch of ``batch_max`` (full
batches under load, no wait when idle). A batch that fails to commit goes back to the front of
the queue and is retried after a backoff that doubles up to ``retry_max_s``; past
``max_pending`` waiting acks the oldest are dropped (their messages stay unacked in the store,
are sent again and acked again: never lost).

:class:`AckBatcher` holds that state and returns decisions; the gateway owns the timer and the
tasks: it arms the timer when told, calls :meth:`AckBatcher.start` when the timer fires and
records each batch returned, reporting back with ``recorded``/``failed`` then ``finished``.
"""

from __future__ import annotations

from enum import Enum
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")


class AckStep(Enum):
    """What to do after :meth:`AckBatcher.add`."""

    WAIT = "wait"  # a timer is armed, or a running flush will pick the ack up
    ARM = "arm"  # open the batch window: call ``start`` in ``batch_s``
    FLUSH = "flush"  # a full batch waits behind a running flush: call ``start`` now


class Retry(NamedTuple):
    """A batch failed: (re)arm the timer for ``delay`` s; ``dropped`` oldest acks were let go."""

    delay: float
    dropped: int


class AckBatcher(Generic[T]):
    """Ack batching decisions (see the module docstring)."""

    def __init__(self, *, batch_s: float, batch_max: int, max_flushes: int, max_pending: int,
                 retry_max_s: float) -> None:
        self.batch_s = batch_s
        self.batch_max = batch_max
        self.max_flushes = max_flushes
        self.max_pending = max_pending
        self.retry_max_s = retry_max_s
        self.pending: list[T] = []  # waiting to be recorded, oldest first
        self.running = 0  # batches being recorded
        self.timer = False  # the shell has a timer armed (batch window or retry backoff)
        self.retry_s = 0.0  # backoff after a failed batch (0: the last one succeeded)

    def add(self, item: T) -> AckStep:
        self.pending.append(item)
        if self.timer:
            return AckStep.WAIT
        if not self.running:
            self.timer = True
            return AckStep.ARM
        if len(self.pending) >= self.batch_max:
            return AckStep.FLUSH
        return AckStep.WAIT

    def start(self) -> list[list[T]]:
        """The timer fired (or was cancelled): the batches to record now. With a flush
        running, only full batches start; the rest waits for it to finish."""
        self.timer = False
        batches: list[list[T]] = []
        size = self.batch_max
        while self.pending and self.running < self.max_flushes:
            if self.running and len(self.pending) < size:
                break
            batches.append(self.pending[:size])
            self.pending = self.pending[size:]
            self.running += 1
        return batches

    def recorded(self) -> None:
        """A batch was committed."""
        self.retry_s = 0.0

    def failed(self, batch: list[T]) -> Retry:
        """A batch failed to commit: keep its acks (first in line) and retry with backoff."""
        self.pending[:0] = batch
        overflow = max(0, len(self.pending) - self.max_pending)
        if overflow:
            del self.pending[:overflow]
        self.retry_s = min(self.retry_max_s, max(0.1, self.retry_s * 2))
        self.timer = True
        return Retry(self.retry_s, overflow)

    def finished(self) -> list[list[T]]:
        """A batch's recording ended (after ``recorded`` or ``failed``): acks that waited for
        it start now, without a further window (unless a retry timer is armed)."""
        self.running -= 1
        if self.pending and not self.timer:
            return self.start()
        return []
