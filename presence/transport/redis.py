"""Redis pub/sub transport.

Channels: ``{prefix}:presence`` (shared: heartbeats, deltas, leaves) and
``{prefix}:presence:{name}`` (direct: transfer requests and answers for the
replica named ``name``). With S > 1 shards, each shard has its own pair,
``{prefix}:presence:{s<n>}`` and ``{prefix}:presence:{s<n>}:{name}``
(``presence.shards``). One daemon thread per transport reads the
subscription; publishing happens on the caller's thread. Redis errors never
propagate: they are counted, the subscriber reconnects with backoff and the
replica's gap detection repairs whatever was missed.

``listen=False`` (a gateway's writer replica) subscribes to the direct channel
only: it publishes its own entries and answers transfer requests, and hears
none of the shard's heartbeats and deltas. ``sharded=True`` uses sharded
pub/sub (``SPUBLISH``/``SSUBSCRIBE``, Redis >= 7); ``cluster=True`` talks to a
Redis Cluster (implies sharded: a shard's channels hash to one slot, so one
cluster node carries each shard's traffic).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import redis

from ..shards import shard_channel
from .base import FrameHandler

__all__ = ["RedisTransport", "redis_client", "redis_transport"]

# Every Redis socket of ours is bounded: a server that stops answering (paused, partitioned,
# overloaded) raises within these times instead of hanging the caller forever, and idle
# subscriber connections are pinged so a silently dead link is noticed.
SOCKET_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
HEALTH_CHECK_S = 5


def redis_client(url: str) -> redis.Redis:
    """A client whose every socket operation has a timeout (publishers and subscribers)."""
    return redis.Redis.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_S, socket_keepalive=True,
    )


def redis_cluster_client(url: str) -> Any:
    """A Redis Cluster client (any node's URL) with the same bounded sockets."""
    from redis.cluster import RedisCluster

    return RedisCluster.from_url(
        url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_keepalive=True,
    )


class RedisTransport:
    def __init__(self, url: str, prefix: str, name: str, *, shard: int = 0, shards: int = 1,
                 listen: bool = True, sharded: bool = False, cluster: bool = False) -> None:
        if not name or ":" in name:
            raise ValueError(f"name: must be non-empty and contain no ':' (got {name!r})")
        if not 0 <= shard < max(shards, 1):
            raise ValueError(f"shard: must be in 0..{shards - 1} (got {shard})")
        self.url = url
        self.prefix = prefix
        self.name = name
        self.shard = shard
        self.listen = listen
        self.cluster = cluster
        self.sharded = sharded or cluster
        self.channel = shard_channel(prefix, shard, shards)
        self.direct = f"{self.channel}:{name}"
        self._subscribed_to = (self.channel, self.direct) if listen else (self.direct,)
        self._client: Any = redis_cluster_client(url) if cluster else redis_client(url)
        self._handler: FrameHandler | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._paused = False
        self.publish_errors = 0
        self.receive_errors = 0
        self.reconnects = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.frames_in = 0

    def start(self, on_frame: FrameHandler) -> None:
        self._handler = on_frame
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"presence-redis-{self.name}", daemon=True
        )
        self._thread.start()
        ready.wait(5.0)

    def _publish(self, channel: str, frame: bytes) -> None:
        if self._paused or self._stop.is_set():
            return
        try:
            if self.sharded:
                self._client.spublish(channel, frame)
            else:
                self._client.publish(channel, frame)
            self.frames_out += 1
            self.bytes_out += len(frame)
        except redis.RedisError:
            self.publish_errors += 1

    def broadcast(self, frame: bytes) -> None:
        self._publish(self.channel, frame)

    def send(self, to: str, frame: bytes) -> None:
        self._publish(f"{self.channel}:{to}", frame)

    def pause(self) -> None:
        """Simulate a partition: stop receiving and sending until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    @property
    def paused(self) -> bool:
        return self._paused

    def stats(self) -> dict[str, Any]:
        return {
            "publish_errors": self.publish_errors,
            "receive_errors": self.receive_errors,
            "reconnects": self.reconnects,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "frames_in": self.frames_in,
        }

    def _subscribe(self, pubsub: Any) -> None:
        if self.sharded:
            pubsub.ssubscribe(*self._subscribed_to)
        else:
            pubsub.subscribe(*self._subscribed_to)

    def _unsubscribe(self, pubsub: Any) -> None:
        if self.sharded:
            pubsub.sunsubscribe(*self._subscribed_to)
        else:
            pubsub.unsubscribe()

    def _next(self, pubsub: Any) -> Any:
        if self.cluster:
            return pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.05)
        return pubsub.get_message(timeout=0.05)

    def _run(self, ready: threading.Event) -> None:
        backoff = 0.05
        kind = "smessage" if self.sharded else "message"
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client.pubsub(ignore_subscribe_messages=True)
                self._subscribe(pubsub)
                subscribed = True
                ready.set()
                backoff = 0.05
                while not self._stop.is_set():
                    if self._paused and subscribed:
                        self._unsubscribe(pubsub)
                        subscribed = False
                    elif not self._paused and not subscribed:
                        self._subscribe(pubsub)
                        subscribed = True
                    msg = self._next(pubsub)
                    if msg is None or msg.get("type") != kind:
                        if not subscribed and self.cluster:
                            self._stop.wait(0.05)  # nothing to poll while held
                        continue
                    data = msg.get("data")
                    if self._paused or not isinstance(data, bytes) or self._handler is None:
                        continue
                    self.frames_in += 1
                    self._handler(data)
            except redis.RedisError:
                self.receive_errors += 1
                self.reconnects += 1
                ready.set()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        with contextlib.suppress(Exception):
            self._client.close()


def redis_transport(url: str, prefix: str, name: str, *, shard: int = 0, shards: int = 1,
                    listen: bool = True, sharded: bool = False,
                    cluster: bool = False) -> RedisTransport:
    """A :class:`RedisTransport` for the replica ``name`` of ``shard`` under ``prefix``."""
    return RedisTransport(url, prefix, name, shard=shard, shards=shards, listen=listen,
                          sharded=sharded, cluster=cluster)
