"""Worker bootstep: a presence replica per worker process, synced before any task is consumed.

Celery starts every worker bootstep before the Consumer (which is ``last``), so blocking here
until the replica has synced keeps the worker from routing with an empty view (an empty replica
would send everyone to push). With the threads pool (our default) tasks run in this process and
share the replica; with prefork, each child builds its own on ``worker_process_init``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init, worker_process_shutdown

from delivery.logs import install_celery_logging
from workers import metrics_wiring
from workers.wiring import WorkerRouting, start_worker_routing

log = logging.getLogger("delivery.worker")
install_celery_logging()  # our loggers print one structured line per event


class _ChildRouting:
    """A prefork child has no worker object: it keeps its own routing here, built after fork
    with the app the parent's step recorded before forking."""

    app: Celery | None = None
    routing: WorkerRouting | None = None


_child = _ChildRouting()


def _uses_prefork(worker: Any) -> bool:
    pool_cls = getattr(worker, "pool_cls", None)
    name = getattr(pool_cls, "__module__", "") + "." + getattr(pool_cls, "__name__", "")
    return "prefork" in name


def _preflight() -> None:
    """An unreachable or unmigrated database or Redis: one line naming the variable, exit 2
    (``celery -A workers.app worker`` as well as ``delivery worker``)."""
    from delivery.preflight import check_database, check_redis
    from delivery.settings import SettingsError, get_settings

    try:
        settings = get_settings()
        check_database(settings)
        check_redis(settings)
    except SettingsError as exc:
        log.critical("configuration error: %s", exc)
        raise SystemExit(2) from None


def _switch_interval() -> None:
    """The consumer thread and the pool threads share one GIL: hand it over sooner."""
    from delivery.gil import apply_switch_interval
    from delivery.settings import SettingsError, get_settings

    with contextlib.suppress(SettingsError):  # _preflight names the bad setting and exits
        apply_switch_interval(get_settings().gil_switch_ms)


def shard_queues(settings: Any) -> list[str]:
    """The queues a worker consumes: its shards' queues and the common queue (push, devices).
    Unsharded: nothing to choose (Celery's default queue, as before)."""
    from delivery.sharding import shard_count
    from delivery.task_names import COMMON_QUEUE, shard_queue

    shards = shard_count(settings)
    if shards <= 1:
        return []
    return [COMMON_QUEUE, *(shard_queue(s, shards) for s in settings.served_shards)]


def _select_queues(worker: Any) -> None:
    """Consume the served shards' queues, unless the operator chose queues with ``-Q``. This
    only names them: the Consumer (the last bootstep) starts consuming after ``start`` below
    returned, i.e. after every served shard's replica has synced."""
    from delivery.settings import SettingsError, get_settings

    try:
        queues = shard_queues(get_settings())
    except SettingsError:
        return  # reported with its variable by the preflight at start
    amqp_queues = worker.app.amqp.queues
    # Celery keeps the ``-Q`` selection here (its public ``consume_from`` falls back to every
    # declared queue when nothing was selected).
    if not queues or getattr(amqp_queues, "_consume_from", None) is not None:
        return
    amqp_queues.select(queues)
    log.info("consuming queues %s", ",".join(queues))


class PresenceStep(bootsteps.StartStopStep):
    """Runs the replica, the node channels, the router and the recovery sweep.

    Like Celery's own steps, it hangs what it builds on the worker: ``worker.routing`` (None
    until started, and with prefork, where each child has its own); remote-control commands
    reach it through ``state.consumer.controller``.
    """

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.prefork = _uses_prefork(worker)
        self.metrics: metrics_wiring.WorkerMetrics | None = None
        worker.routing = None
        _child.app = worker.app
        _select_queues(worker)

    def start(self, worker: Any) -> None:
        _switch_interval()
        if self.prefork:
            log.info("prefork pool: each child process runs its own presence replica")
            return
        _preflight()
        worker.routing = start_worker_routing(worker.app, name=f"worker.{worker.hostname}")
        self.metrics = metrics_wiring.install(worker.routing)

    def stop(self, worker: Any) -> None:
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics = None
        routing: WorkerRouting | None = getattr(worker, "routing", None)
        if routing is not None:
            routing.stop()
            worker.routing = None


@worker_process_init.connect
def _child_init(**_: Any) -> None:
    if _child.app is None:  # not a worker built with our step
        return
    _child.routing = start_worker_routing(_child.app)
    # One port per host cannot serve every prefork child: children count but do not serve.
    metrics_wiring.install(_child.routing, serve=False)


@worker_process_shutdown.connect
def _child_shutdown(**_: Any) -> None:
    if _child.routing is not None:
        _child.routing.stop()
