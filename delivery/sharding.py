"""Sharded presence and routing, as configured: which queue a recipient's tasks go to, and the
presence a gateway or a worker runs (docs/scaling.md, "The sharded design").

S = ``DELIVERY_PRESENCE_SHARDS`` (1 = unsharded: one presence channel, Celery's default queue,
exactly the design before sharding). The embedded mode (one process, in-process transports)
is always unsharded: there is nobody to split the work with.
"""

from __future__ import annotations

from delivery.configs import presence_config
from delivery.settings import Settings
from delivery.task_names import shard_queue
from presence.runtime import MemoryNetwork, PresenceNode, redis_transport
from presence.sharded import ShardedPresence
from presence.shards import shard_of
from presence.transport.base import Transport

__all__ = ["make_presence", "recipient_queue", "shard_count"]


def shard_count(settings: Settings) -> int:
    """S as this process applies it: 1 in the embedded mode."""
    return 1 if settings.embedded else settings.presence_shards


def recipient_queue(recipient: str, settings: Settings) -> str:
    """The Celery queue of the tasks that route messages to ``recipient`` (send, route)."""
    s = shard_count(settings)
    return shard_queue(shard_of(recipient, s), s)


def make_presence(settings: Settings, name: str, *, gateway: bool,
                  network: MemoryNetwork | None = None) -> PresenceNode | ShardedPresence:
    """This process's presence: a ``PresenceNode`` when unsharded (as before), otherwise a
    ``ShardedPresence``: a gateway writes every shard (writer replicas, it hears only transfer
    requests), a worker replicates the shards it serves (``DELIVERY_WORKER_SHARDS``).

    Without Redis: an in-process node on ``network`` (a shared ``MemoryNetwork``)."""
    config = presence_config(settings)
    url = settings.effective_presence_redis_url
    if not url:
        net = network if network is not None else MemoryNetwork()
        return PresenceNode(name, net.transport(name), config)
    shards = shard_count(settings)
    sharded = settings.presence_pubsub != "classic"
    cluster = settings.presence_pubsub == "cluster"
    if shards == 1 and not sharded:
        return PresenceNode(name, redis_transport(url, settings.key_prefix, name), config)

    def transport_for(shard: int, replica: str) -> Transport:
        return redis_transport(url, settings.key_prefix, replica, shard=shard, shards=shards,
                               listen=not gateway or shards == 1, sharded=sharded,
                               cluster=cluster)

    served = None if gateway else settings.served_shards
    return ShardedPresence.build(name, transport_for, shards=shards, served=served,
                                 config=config, writer=gateway and shards > 1)
