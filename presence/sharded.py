"""One process's presence over S shards: a :class:`PresenceNode` per shard it takes part in.

    presence = ShardedPresence.build("worker.w1", transport_for, shards=4, served=(0, 2))
    presence.start(); presence.wait_synced(10.0)
    presence.list("alice")        # from the replica of alice's shard (NotServed if not ours)

* A **worker** replicates the shards it serves (``served``): one full replica per shard, each
  on that shard's channels, so its memory and inbound traffic are those shards' only.
* A **gateway** (``writer=True``) has a writer replica in every shard: each user's entries go
  to that user's shard (``track``/``untrack`` pick the node by ``shard_of(key)``), and it hears
  nothing but transfer requests (:mod:`presence.writer`).

The nodes are independent: one shard's replica syncing, going down or being held does not
touch the others. ``synced`` is true once every node has synced; ``synced_for(key)`` asks
only the node of ``key``'s shard.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import PresenceConfig
from .runtime import DiffCallback, PresenceNode
from .shards import shard_of
from .state import Presence
from .transport.base import Transport

__all__ = ["NotServed", "ShardedPresence"]

# (shard, replica name) -> the transport of that replica on that shard's channels
ShardTransportFactory = Callable[[int, str], Transport]


class NotServed(LookupError):
    """The key's shard is not replicated in this process."""


class _Transports:
    """The nodes' transports as one, for the operator's ``presence_hold`` (pause all)."""

    def __init__(self, nodes: Iterable[PresenceNode]) -> None:
        self._nodes = list(nodes)

    def pause(self) -> None:
        for n in self._nodes:
            getattr(n.transport, "pause", lambda: None)()

    def resume(self) -> None:
        for n in self._nodes:
            getattr(n.transport, "resume", lambda: None)()

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for n in self._nodes:
            s = getattr(n.transport, "stats", None)
            for k, v in (s() if callable(s) else {}).items():
                if isinstance(v, int):
                    total[k] = total.get(k, 0) + v
        return total


class ShardedPresence:
    def __init__(self, name: str, nodes: Mapping[int, PresenceNode], shards: int) -> None:
        if not nodes:
            raise ValueError("nodes: a sharded presence needs at least one shard")
        self.name = name
        self.shards = shards
        self.nodes = dict(sorted(nodes.items()))
        self.transport = _Transports(self.nodes.values())

    @classmethod
    def build(cls, name: str, transport_for: ShardTransportFactory, *, shards: int,
              served: Iterable[int] | None = None, config: PresenceConfig | None = None,
              writer: bool = False) -> ShardedPresence:
        """A node per shard in ``served`` (default: all ``shards``), named ``name`` in each."""
        picked = tuple(range(shards)) if served is None else tuple(served)
        nodes = {s: PresenceNode(name, transport_for(s, name), config, writer=writer)
                 for s in picked}
        return cls(name, nodes, shards)

    @property
    def served(self) -> tuple[int, ...]:
        return tuple(self.nodes)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        for n in self.nodes.values():
            n.start()

    def stop(self, graceful: bool = True) -> None:
        for n in self.nodes.values():
            n.stop(graceful)

    def wait_synced(self, timeout: float) -> bool:
        """Wait for every shard's replica (they sync in parallel) up to ``timeout`` in all."""
        end = time.monotonic() + timeout
        return all(n.wait_synced(max(0.0, end - time.monotonic()))
                   for n in self.nodes.values())

    # ------------------------------------------------------------- operations

    def node_for(self, key: str) -> PresenceNode:
        node = self.nodes.get(shard_of(key, self.shards))
        if node is None:
            raise NotServed(f"shard {shard_of(key, self.shards)} of {key!r} is not served here")
        return node

    def serves(self, key: str) -> bool:
        return shard_of(key, self.shards) in self.nodes

    def track(self, key: str, conn: str, meta: Mapping[str, Any] | None = None) -> None:
        self.node_for(key).track(key, conn, meta)

    def update(self, key: str, conn: str, meta: Mapping[str, Any] | None) -> bool:
        return self.node_for(key).update(key, conn, meta)

    def untrack(self, key: str, conn: str) -> None:
        self.node_for(key).untrack(key, conn)

    def untrack_conn(self, conn: str) -> None:
        for n in self.nodes.values():
            n.untrack_conn(conn)

    def list(self, key: str) -> builtins.list[Presence]:
        """Visible connections of ``key``; raises :class:`NotServed` for another's shard."""
        return self.node_for(key).list(key)

    def list_all(self) -> builtins.list[Presence]:
        return [p for n in self.nodes.values() for p in n.list_all()]

    def subscribe(self, callback: DiffCallback) -> None:
        for n in self.nodes.values():
            n.subscribe(callback)

    @property
    def synced(self) -> bool:
        return all(n.synced for n in self.nodes.values())

    def synced_for(self, key: str) -> bool:
        node = self.nodes.get(shard_of(key, self.shards))
        return node is not None and node.synced

    @property
    def callback_errors(self) -> int:
        return sum(n.callback_errors for n in self.nodes.values())

    def stats(self) -> dict[str, Any]:
        """``PresenceNode.stats()`` summed over the shards (replicas named ``s<n>/name:inc``),
        with each shard's own under ``"shards"``."""
        per = {s: n.stats() for s, n in self.nodes.items()}
        up = [f"s{s}/{r}" for s, st in per.items() for r in st.get("replicas_up", ())]
        down = [f"s{s}/{r}" for s, st in per.items() for r in st.get("replicas_down", ())]
        dropped: dict[str, int] = {}
        for st in per.values():
            for k, v in st.get("dropped", {}).items():
                dropped[k] = dropped.get(k, 0) + v
        return {
            "name": self.name,
            "entries": sum(int(st.get("entries", 0)) for st in per.values()),
            "replicas_up": sorted(up),
            "replicas_down": sorted(down),
            "synced": all(st.get("synced") for st in per.values()),
            "dropped": dropped,
            "dropped_total": sum(dropped.values()),
            "transport": self.transport.stats(),
            "callback_errors": self.callback_errors,
            "running": all(st.get("running") for st in per.values()),
            "shards": {str(s): st for s, st in per.items()},
            "shard_count": self.shards,
        }
