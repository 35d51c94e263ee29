"""Presence: delta-CRDT replicas of "who is connected where".

Layers, bottom up (this package imports nothing else of the project):

* :mod:`presence.state` - the pure CRDT (no I/O, no clock);
* :mod:`presence.wire` - the versioned msgpack frame format;
* :mod:`presence.replica` - the sans-IO replica (heartbeats, deltas, transfers,
  down/purge detection, readiness);
* :mod:`presence.transport` - Redis pub/sub and in-memory transports;
* :mod:`presence.runtime` - :class:`PresenceNode`, the thread-based adapter;
* :mod:`presence.sim` - a deterministic virtual-time cluster for tests.

See ``docs/presence.md``.
"""

from .config import PresenceConfig
from .replica import Replica
from .runtime import PresenceNode
from .state import Presence, State
from .transport import LinkPolicy, MemoryNetwork, RedisTransport, Transport, redis_transport

__all__ = [
    "LinkPolicy",
    "MemoryNetwork",
    "Presence",
    "PresenceConfig",
    "PresenceNode",
    "RedisTransport",
    "Replica",
    "State",
    "Transport",
    "redis_transport",
]
