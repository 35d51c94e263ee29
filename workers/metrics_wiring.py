"""Hook ``delivery.metrics`` into a worker process: routing decisions, push results, the
recovery sweep and the presence replica's gauges; serve ``/metrics`` on DELIVERY_METRICS_PORT.

Called by the worker bootstep once the routing side is up (``install``) and on shutdown
(``WorkerMetrics.stop``). With the threads pool (our default) one process serves every task
thread, so one metrics endpoint covers the whole worker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery.signals import task_postrun

from delivery import metrics
from delivery.push.service import PushOutcome
from delivery.routing.policy import Decision, Dispatch, Expire, MarkPending, Push, Trigger
from delivery.store import MessageRecord, Store
from delivery.task_names import PUSH_TASK
from delivery.vocabulary import State
from presence.runtime import PresenceNode
from workers.wiring import WorkerRouting

log = logging.getLogger("delivery.worker")

# delivery.push outcomes -> message outcome (None: no outcome reached by this run).
PUSH_OUTCOMES: dict[str, str] = {
    PushOutcome.PUSHED: State.PUSHED, PushOutcome.NO_DEVICE: State.PENDING,
    PushOutcome.FAILED: State.PENDING,
}


def on_decision(msg: MessageRecord, decision: Decision, trigger: Trigger) -> None:
    metrics.DECISIONS.labels(type(decision).__name__.lower(), trigger.value).inc()
    match decision:
        case MarkPending():
            metrics.record_outcome(State.PENDING, msg.attempts)
        case Expire():
            metrics.record_outcome(State.EXPIRED, msg.attempts)
        case Push() | Dispatch():
            pass


def on_sweep(found: int) -> None:
    metrics.SWEEP_FOUND.inc(found)


def _on_task_postrun(task: Any = None, retval: Any = None, kwargs: Any = None,
                     state: str | None = None, **_: Any) -> None:
    if getattr(task, "name", None) != PUSH_TASK or state != "SUCCESS":
        return
    if not isinstance(retval, str):
        return
    metrics.PUSHES.labels(retval).inc()
    outcome = PUSH_OUTCOMES.get(retval)
    if outcome is not None:
        attempt = (kwargs or {}).get("attempt")
        metrics.record_outcome(outcome, int(attempt) if isinstance(attempt, int) else None)


def _chain(
    first: Callable[..., None] | None, second: Callable[..., None]
) -> Callable[..., None]:
    if first is None:
        return second

    def both(*args: Any) -> None:
        first(*args)
        second(*args)

    return both


class WorkerMetrics:
    """The periodic gauge updater of one worker process: presence every ``interval`` seconds,
    the store's oldest-message ages every ``store_interval`` seconds."""

    def __init__(self, presence: PresenceNode, interval: float, store: Store | None = None,
                 store_interval: float = 15.0) -> None:
        self.presence = presence
        self.interval = interval
        self.store = store
        self.store_interval = store_interval
        self._next_store = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="delivery-metrics", daemon=True)

    def start(self) -> None:
        self.update()
        self._thread.start()

    def update(self) -> None:
        try:
            metrics.update_presence(self.presence.stats())
        except Exception:  # metrics must never take the worker down
            log.exception("metrics: reading presence stats failed")
        if self.store is None or time.monotonic() < self._next_store:
            return
        self._next_store = time.monotonic() + self.store_interval
        try:
            metrics.update_ages(self.store.oldest_in_flight(), self.store.oldest_unacked())
        except Exception:
            log.exception("metrics: reading message ages failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.update()


_postrun_connected = False


def install(routing: WorkerRouting, *, serve: bool = True,
            interval: float = 1.0) -> WorkerMetrics:
    """Hook metrics into ``routing`` and, when ``serve`` and the port is set, serve them."""
    global _postrun_connected
    routing.router.on_decision = _chain(routing.router.on_decision, on_decision)
    routing.sweep.on_sweep = _chain(routing.sweep.on_sweep, on_sweep)
    if not _postrun_connected:
        task_postrun.connect(_on_task_postrun, weak=False)
        _postrun_connected = True
    updater = WorkerMetrics(routing.presence, interval, routing.runtime.store)
    updater.start()
    port = routing.runtime.settings.metrics_port
    if serve and port > 0:
        try:
            metrics.start_metrics_server(port, role="worker")
            log.info("metrics served on :%d/metrics", port)
        except OSError as exc:
            log.error("metrics: cannot listen on port %d: %s", port, exc)
    return updater
