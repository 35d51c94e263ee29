"""Batched execution of ``delivery.send`` inside a Celery worker (threads pool): the shell.

Celery hands each task message to a task's *strategy*; ours builds Celery's default one, whose
last step (``consumer.on_task_request``: run the request in the pool) is replaced by
:class:`SendBatcher.add`. Everything before it is Celery's own: request parsing, the
``task-received`` event, revocation, and countdown/ETA tasks, which Celery's timer hands to the
regular per-message path. What to flush and when is decided by the pure
``delivery.routing.batch.take`` (group commit: no timer; a lone message is flushed at once;
the tasks one wake-up of the consumer fetched go together, ``broker_transport.ARRIVALS``).

A batch runs in one pool thread. Requests it completes are finished like any task (acked after
the run — ``acks_late`` — then ``task-succeeded``); every other request goes through the
regular per-message path, unchanged: a bad message, a database outage or a message not claimed
by the batch neither fails nor delays the others. A worker killed mid-batch has acked none of
its requests: the broker redelivers them, and each message's compare-and-set claim makes the
redelivery route nothing twice (the messages were durable before their task was sent).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from celery.worker.strategy import default as default_strategy

from delivery.broker_transport import ARRIVALS
from delivery.routing.batch import take

log = logging.getLogger("delivery.batching")

# Runs a batch: returns (completed requests, requests for the per-message path).
RunBatch = Callable[[Sequence[Any]], tuple[list[Any], list[Any]]]


class BatchStats:
    """Batches run by this process, by size, and how many requests each path took (read by
    the ``send_batch_stats`` remote-control command, e.g. by ``delivery bench e2e``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sizes: Counter[int] = Counter()
        self.completed = 0
        self.per_message = 0

    def record(self, size: int, completed: int, per_message: int) -> None:
        with self._lock:
            self.sizes[size] += 1
            self.completed += completed
            self.per_message += per_message

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {"sizes": {str(k): v for k, v in sorted(self.sizes.items())},
                    "completed": self.completed, "per_message": self.per_message}


STATS = BatchStats()


class BatchLimit:
    """The largest batch, changeable while the worker runs (the ``send_batch_limit``
    remote-control command: an operator's knob, and how ``delivery bench e2e`` measures the
    per-message counts at each batch size). Starts at ``DELIVERY_SEND_BATCH_MAX``."""

    def __init__(self) -> None:
        self.override: int | None = None

    def effective(self, configured: int) -> int:
        return configured if self.override is None else self.override

    def set(self, max_batch: int | None) -> None:
        """``max_batch`` >= 1, or None to go back to the configured value."""
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"a batch limit must be >= 1, got {max_batch}")
        self.override = max_batch


LIMIT = BatchLimit()


class SendBatcher:
    def __init__(self, pool: Any, run: RunBatch, fallback: Callable[[Any], Any], *,
                 max_batch: int, max_inflight: int,
                 arriving: Callable[[], bool] = lambda: ARRIVALS.open) -> None:
        self._pool = pool
        self._arriving = arriving
        self._run = run
        self._fallback = fallback
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._buffer: deque[Any] = deque()
        self._inflight = 0
        self._lock = threading.Lock()

    def add(self, req: Any) -> None:
        """A request Celery would run now (from the consumer thread)."""
        with self._lock:
            self._buffer.append(req)
        self.flush()

    def flush(self) -> None:
        """Start every batch the rule allows now (after a request, a batch's end, or the end of
        a wake-up's fetch)."""
        while True:
            with self._lock:
                batch = self._take()
            if not batch:
                return
            self._submit(batch)

    def _take(self) -> list[Any]:
        n = take(len(self._buffer), self._inflight, max_inflight=self._max_inflight,
                 max_batch=LIMIT.effective(self._max_batch), arriving=self._arriving())
        if n:
            self._inflight += 1
        return [self._buffer.popleft() for _ in range(n)]

    def _submit(self, batch: list[Any]) -> None:
        self._pool.apply_async(self._execute, (batch,), callback=self._finish)

    def _execute(self, batch: list[Any]) -> tuple[list[Any], list[Any], float]:
        started = time.monotonic()
        try:
            done, rest = self._run(batch)
        except Exception as exc:  # the batch could not run: every request takes the regular path
            # The type only: a database error's text can echo a row, bodies included.
            log.warning("send batch of %d failed (%s); running its messages one by one",
                        len(batch), type(exc).__name__)
            done, rest = [], list(batch)
        return done, rest, time.monotonic() - started

    def _finish(self, result: tuple[list[Any], list[Any], float]) -> None:
        done, rest, runtime = result
        STATS.record(len(done) + len(rest), len(done), len(rest))
        try:
            per = runtime / max(1, len(done) + len(rest))
            for req in done:
                req.on_success((False, None, per))  # ack (acks_late) + task-succeeded
            for req in rest:
                self._fallback(req)
        finally:
            with self._lock:
                self._inflight -= 1
            self.flush()


def batched_strategy(task: Any, app: Any, consumer: Any, run: RunBatch, *, max_batch: int,
                     max_inflight: int, **kwargs: Any) -> Any:
    """Celery's default strategy for ``task``, with runnable requests sent to a batcher. Only
    on the threads pool (a batch is a Python call in this process); else the default."""
    if type(consumer.pool).__module__ != "celery.concurrency.thread":
        return default_strategy(task, app, consumer, **kwargs)
    handle = consumer.on_task_request
    batcher = SendBatcher(consumer.pool, run, handle, max_batch=max_batch,
                          max_inflight=max_inflight)
    ARRIVALS.listen(task.name, batcher.flush)
    consumer.on_task_request = batcher.add
    try:
        return default_strategy(task, app, consumer, **kwargs)
    finally:
        consumer.on_task_request = handle  # ETA and rate-limited requests: the regular path
