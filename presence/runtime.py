"""Thread-based presence node: the adapter the gateway and the workers use.

    node = PresenceNode("gw-1", redis_transport(url, "delivery", "gw-1"))
    node.start()
    node.wait_synced(2.0)
    node.track("alice", "conn-1", {"device": "ios"})
    node.list("alice")   # -> [Presence(key="alice", conn="conn-1", node="gw-1", ...)]
    node.stop()

One daemon thread drives the sans-IO :class:`~presence.replica.Replica`: it
waits on a queue fed by the transport's receive thread and by local
operations, and otherwise sleeps until the replica's next deadline. Local
operations take a lock for microseconds; :meth:`PresenceNode.list` takes no
lock at all (it reads immutable per-key tuples).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .config import PresenceConfig
from .replica import Out, Replica
from .state import Presence
from .transport.base import Transport, TransportFactory
from .transport.memory import LinkPolicy, MemoryNetwork
from .transport.redis import RedisTransport, redis_transport
from .writer import WriterReplica

__all__ = [
    "LinkPolicy",
    "MemoryNetwork",
    "Presence",
    "PresenceConfig",
    "PresenceNode",
    "RedisTransport",
    "redis_transport",
]

log = logging.getLogger("presence")

DiffCallback = Callable[[list[Presence], list[Presence]], None]
_WAKE = object()


def new_incarnation() -> int:
    """A fresh incarnation: microseconds since the epoch (grows across restarts)."""
    return time.time_ns() // 1000


class PresenceNode:
    def __init__(
        self,
        name: str,
        transport_factory_or_transport: Transport | TransportFactory,
        config: PresenceConfig | None = None,
        *,
        incarnation: int | None = None,
        writer: bool = False,
    ) -> None:
        """``writer``: publish our own entries and answer transfers only (a gateway's replica
        of one shard, on a transport that does not listen to the shard's channel)."""
        self.name = name
        self.config = config or PresenceConfig()
        t: Any = transport_factory_or_transport
        if hasattr(t, "broadcast") and hasattr(t, "start"):
            self.transport: Transport = t
        elif callable(t):
            self.transport = t(name)
        else:
            raise TypeError("expected a Transport or a callable name -> Transport")
        self.incarnation = new_incarnation() if incarnation is None else incarnation
        self._lock = threading.RLock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        cls = WriterReplica if writer else Replica
        self._replica = cls(name, self.incarnation, self.config, now=time.monotonic())
        self._subscribers: builtins.list[DiffCallback] = []
        self._synced_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.callback_errors = 0

    # -------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background (daemon) thread that runs the replica."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"presence-{self.name}", daemon=True)
        self.transport.start(self._queue.put)
        self._thread.start()

    def stop(self, graceful: bool = True) -> None:
        """Stop the node. ``graceful`` broadcasts a leave so peers purge us at once."""
        if self._stopping.is_set():
            return
        outs: builtins.list[Out] = []
        if graceful:
            with self._lock:
                outs = self._replica.leave()
        self._send(outs)
        self._stopping.set()
        self._queue.put(_WAKE)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self.transport.close()

    def __enter__(self) -> PresenceNode:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ operations

    def track(self, key: str, conn: str, meta: Mapping[str, Any] | None = None) -> None:
        """Track connection ``conn`` of user ``key`` on this node (update if tracked)."""
        with self._lock:
            self._replica.track(key, conn, meta)
        self._queue.put(_WAKE)

    def update(self, key: str, conn: str, meta: Mapping[str, Any] | None) -> bool:
        with self._lock:
            p = self._replica.update(key, conn, meta)
        self._queue.put(_WAKE)
        return p is not None

    def untrack(self, key: str, conn: str) -> None:
        with self._lock:
            self._replica.untrack(key, conn)
        self._queue.put(_WAKE)

    def untrack_conn(self, conn: str) -> None:
        with self._lock:
            self._replica.untrack_conn(conn)
        self._queue.put(_WAKE)

    def list(self, key: str) -> builtins.list[Presence]:
        """Visible connections of ``key`` on every up replica. Lock-free."""
        return self._replica.state.list(key)

    def list_all(self) -> builtins.list[Presence]:
        return self._replica.state.list_all()

    def subscribe(self, callback: DiffCallback) -> None:
        """Call ``callback(joins, leaves)`` on the node thread after every change.

        The callback must be quick and must not call back into the node's
        mutating methods' locks for long; exceptions are counted and logged.
        """
        self._subscribers.append(callback)
        # joins and leaves are only computed once someone listens
        self._replica.on_diff = self._on_diff

    @property
    def synced(self) -> bool:
        return self._replica.synced

    def serves(self, key: str) -> bool:
        """Whether this node holds ``key``'s shard (always: an unsharded node holds every key)."""
        return True

    def synced_for(self, key: str) -> bool:
        """Whether the replica holding ``key`` has synced (:class:`ShardedPresence` differs)."""
        return self._replica.synced

    def wait_synced(self, timeout: float) -> bool:
        if self._replica.synced:
            return True
        self._synced_event.wait(timeout)
        return self._replica.synced

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = self._replica.stats()
        tstats = getattr(self.transport, "stats", None)
        if callable(tstats):
            s["transport"] = tstats()
        s["callback_errors"] = self.callback_errors
        s["running"] = self._thread is not None and not self._stopping.is_set()
        return s

    # --------------------------------------------------------------- internals

    def _on_diff(self, joins: builtins.list[Presence], leaves: builtins.list[Presence]) -> None:
        for cb in self._subscribers:
            try:
                cb(joins, leaves)
            except Exception:
                self.callback_errors += 1
                log.exception("presence subscriber failed")

    def _send(self, outs: builtins.list[Out]) -> None:
        for o in outs:
            try:
                if o.to is None:
                    self.transport.broadcast(o.frame)
                else:
                    self.transport.send(o.to, o.frame)
            except Exception:
                log.exception("presence transport send failed")

    def _run(self) -> None:
        rep = self._replica
        q = self._queue
        while not self._stopping.is_set():
            with self._lock:
                deadline = rep.next_deadline()
            timeout = deadline - time.monotonic()
            items: builtins.list[object] = []
            with contextlib.suppress(queue.Empty):
                items.append(q.get(timeout=max(0.0, timeout)) if timeout > 0 else q.get_nowait())
            while len(items) < 1000:
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            if self._stopping.is_set():
                break
            now = time.monotonic()
            outs: builtins.list[Out] = []
            try:
                with self._lock:
                    for item in items:
                        if isinstance(item, bytes):
                            outs += rep.receive(item, now)
                    outs += rep.tick(now)
            except Exception:  # pragma: no cover - the node thread must survive
                log.exception("presence replica failed")
            self._send(outs)
            if rep.synced and not self._synced_event.is_set():
                self._synced_event.set()
