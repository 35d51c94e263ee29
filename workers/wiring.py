"""Build the routing side of a worker process: presence replica, node channels, router, sweep.

Used by the worker bootstep (threads pool: one replica per worker process, shared by its task
threads) and, for the prefork pool, once per child process.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypedDict

from celery import Celery

from delivery.channels import NodeChannels, RedisChannels
from delivery.clock import DatabaseAlignedClock
from delivery.configs import policy_config, presence_config
from delivery.routing.recent import RecentConnections
from delivery.routing.router import Router
from delivery.routing.sweep import SweepLoop
from delivery.runtime import Runtime, get_runtime
from delivery.task_names import PUSH_TASK, ROUTE_TASK
from presence.runtime import PresenceNode, redis_transport

log = logging.getLogger("delivery.worker")


class CeleryHooks(TypedDict):
    """The router's callbacks (keyword arguments of ``Router``)."""

    enqueue_push: Callable[[str, int], None]
    schedule_recheck: Callable[[str, int, float], None]


def celery_hooks(app: Celery) -> CeleryHooks:
    """Router callbacks that hand work to other tasks through the broker."""

    def enqueue_push(message_id: str, attempt: int) -> None:
        app.send_task(PUSH_TASK, kwargs={"message_id": message_id, "attempt": attempt},
                      ignore_result=True)

    def schedule_recheck(message_id: str, attempt: int, delay: float) -> None:
        app.send_task(
            ROUTE_TASK, kwargs={"message_id": message_id, "trigger": "recheck", "attempt": attempt},
            countdown=delay, ignore_result=True,
        )

    return {"enqueue_push": enqueue_push, "schedule_recheck": schedule_recheck}


@dataclass
class WorkerRouting:
    runtime: Runtime
    presence: PresenceNode
    channels: NodeChannels
    router: Router
    sweep: SweepLoop

    def stop(self) -> None:
        self.sweep.stop()
        self.presence.stop(graceful=True)


def start_worker_routing(app: Celery, name: str | None = None,
                         sync_timeout: float = 10.0) -> WorkerRouting:
    """Start this process's replica, wait until it has synced, then install a router."""
    rt = get_runtime()
    settings = rt.settings
    if not settings.redis_url:
        raise RuntimeError("a worker needs DELIVERY_REDIS_URL for presence and node channels")
    name = name or f"worker.{socket.gethostname()}.{os.getpid()}"
    node = PresenceNode(
        name, redis_transport(settings.redis_url, settings.key_prefix, name),
        presence_config(settings),
    )
    node.start()
    if not node.wait_synced(sync_timeout):
        log.warning("presence replica %s not synced after %.1fs; routing waits for it",
                    name, sync_timeout)
    channels = RedisChannels(settings.redis_url, settings.key_prefix)
    clock = DatabaseAlignedClock()
    recent = RecentConnections()  # where presence last saw each user: asked before a push
    node.subscribe(recent.on_diff)
    router = Router(rt.store, node, channels, policy_config(settings), clock=clock,
                    last_conn=recent.last, **celery_hooks(app))
    rt.presence, rt.channels, rt.router = node, channels, router
    sweep = SweepLoop(router, settings.sweep_interval_s, settings.sweep_batch,
                      lease_s=settings.sweep_lease_s, clock=clock)
    sweep.start()
    log.info("worker routing ready: replica %s synced=%s", name, node.synced)
    return WorkerRouting(rt, node, channels, router, sweep)
