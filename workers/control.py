"""Remote-control commands for operators and failure tests (``celery -A workers.app control``).

``presence_who USER``: where this worker's replica thinks USER is connected (sharded: only a
worker serving USER's shard knows; the others answer ``serves: false``).

``presence_shards``: the shards this worker serves and whether each one's replica has synced.

``send_batch_stats``: the ``delivery.send`` batches this worker ran, by size, and how many
requests were completed by a batch or went through the per-message task.

``send_batch_limit [N]``: the largest ``delivery.send`` batch this worker runs from now on
(``N`` >= 1; no argument or 0: back to ``DELIVERY_SEND_BATCH_MAX``); answers the previous and
the new limit.

``presence_hold SECONDS``: stop this worker's presence replica from hearing its peers for a
while (a partition of this one link), then resume; gap detection repairs what it missed. It is
how the end-to-end tests force the seed's race on real processes, and how an operator can
rehearse one.
"""

from __future__ import annotations

import threading
from typing import Any

from celery.worker.control import control_command

from presence.transport.redis import RedisTransport
from workers.wiring import WorkerRouting


def _routing(state: Any) -> WorkerRouting | None:
    """The routing the presence step hung on this worker (the consumer's controller)."""
    worker = getattr(state.consumer, "controller", None)
    routing: WorkerRouting | None = getattr(worker, "routing", None)
    return routing


@control_command(args=[("seconds", float)], signature="<seconds>")
def presence_hold(state: Any, seconds: float = 2.0) -> dict[str, Any]:
    routing = _routing(state)
    if routing is None:
        return {"error": "no presence replica in this worker"}
    transport = routing.presence.transport
    if not isinstance(transport, RedisTransport):  # a worker's replica talks over Redis
        return {"error": "this worker's presence transport cannot be held"}
    transport.pause()
    timer = threading.Timer(seconds, transport.resume)
    timer.daemon = True
    timer.start()
    return {"ok": f"presence held for {seconds:.2f}s on {routing.presence.name}"}


@control_command(args=[("user", str)], signature="<user>")
def presence_who(state: Any, user: str) -> dict[str, Any]:
    """Where this worker's replica thinks ``user`` is connected, and whether it has synced."""
    routing = _routing(state)
    if routing is None:
        return {"error": "no presence replica in this worker"}
    node = routing.presence
    if not node.serves(user):
        return {"replica": node.name, "synced": False, "serves": False, "conns": []}
    return {
        "replica": node.name, "synced": node.synced_for(user), "serves": True,
        "conns": sorted([p.node, p.conn] for p in node.list(user)),
    }


@control_command()
def presence_shards(state: Any) -> dict[str, Any]:
    """The shards this worker serves (all of them when unsharded) and their replicas' sync."""
    routing = _routing(state)
    if routing is None:
        return {"error": "no presence replica in this worker"}
    node = routing.presence
    nodes = getattr(node, "nodes", None)
    if nodes is None:
        return {"replica": node.name, "shards": None, "synced": {"all": node.synced}}
    return {"replica": node.name, "shards": sorted(nodes),
            "synced": {str(s): n.synced for s, n in nodes.items()}}


@control_command()
def send_batch_stats(state: Any) -> dict[str, Any]:
    from delivery.send_batching import STATS

    return STATS.snapshot()


@control_command(args=[("max_batch", int)], signature="[max_batch]")
def send_batch_limit(state: Any, max_batch: int = 0) -> dict[str, Any]:
    from delivery.runtime import get_runtime
    from delivery.send_batching import LIMIT

    configured = get_runtime().settings.send_batch_max
    before = LIMIT.effective(configured)
    try:
        LIMIT.set(max_batch or None)
    except ValueError as exc:
        return {"error": str(exc)}
    return {"previous": before, "max_batch": LIMIT.effective(configured)}
