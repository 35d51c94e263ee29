"""Worker bootstep: a presence replica per worker process, synced before any task is consumed.

Celery starts every worker bootstep before the Consumer (which is ``last``), so blocking here
until the replica has synced keeps the worker from routing with an empty view (an empty replica
would send everyone to push). With the threads pool (our default) tasks run in this process and
share the replica; with prefork, each child builds its own on ``worker_process_init``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from celery.signals import worker_process_init, worker_process_shutdown

from delivery.logs import install_celery_logging
from workers import metrics_wiring
from workers.wiring import WorkerRouting, start_worker_routing

log = logging.getLogger("delivery.worker")
_routing: WorkerRouting | None = None
_metrics: metrics_wiring.WorkerMetrics | None = None
install_celery_logging()  # our loggers print one structured line per event


def current_routing() -> WorkerRouting | None:
    """This process's routing (replica, router, sweep), once started."""
    return _routing


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


class PresenceStep(bootsteps.StartStopStep):
    """Runs the replica, the node channels, the router and the recovery sweep."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.prefork = _uses_prefork(worker)

    def start(self, worker: Any) -> None:
        global _routing, _metrics
        if self.prefork:
            log.info("prefork pool: each child process runs its own presence replica")
            return
        _preflight()
        _routing = start_worker_routing(worker.app, name=f"worker.{worker.hostname}")
        _metrics = metrics_wiring.install(_routing)

    def stop(self, worker: Any) -> None:
        global _routing, _metrics
        if _metrics is not None:
            _metrics.stop()
            _metrics = None
        if _routing is not None:
            _routing.stop()
            _routing = None


@worker_process_init.connect
def _child_init(**_: Any) -> None:
    global _routing
    from workers.app import app

    _routing = start_worker_routing(app)
    # One port per host cannot serve every prefork child: children count but do not serve.
    metrics_wiring.install(_routing, serve=False)


@worker_process_shutdown.connect
def _child_shutdown(**_: Any) -> None:
    if _routing is not None:
        _routing.stop()
