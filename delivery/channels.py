"""Node-addressed channels: routing hands frames to the gateway node that holds a connection.

A frame is a small dict (the ``deliver`` and ``owed`` frames of docs/protocol.md, encoded and
decoded by ``delivery.gateway.protocol``); the channel is fire-and-forget on purpose: a frame
lost with a crashed gateway is not a lost message, because the message stays in the store with
an ack deadline and the recovery sweep routes it again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import redis
from redis.client import PubSub

from presence.transport.redis import redis_client

log = logging.getLogger("delivery.channels")

FrameHandler = Callable[[dict[str, Any]], None]
# Called (from the channel's thread) once a subscription is back after its link dropped:
# frames published meanwhile were lost, so the subscriber must catch up from the store.
ResubscribedHandler = Callable[[], None]


class Subscription(Protocol):
    def close(self) -> None: ...


class NodeChannels(Protocol):
    def publish(self, node: str, frame: dict[str, Any]) -> int:
        """Send ``frame`` to ``node``; returns how many subscribers received it (0: nobody,
        -1: the channel is unreachable right now)."""
        ...

    def subscribe(self, node: str, handler: FrameHandler,
                  on_resubscribed: ResubscribedHandler | None = None) -> Subscription:
        """Call ``handler`` (from a background thread) with every frame sent to ``node``;
        ``on_resubscribed`` after the subscription came back from a lost link."""
        ...


# The channel every gateway listens on besides its own (``subscribe(BROADCAST, ...)``); the
# frames on both are built and read in delivery/gateway/protocol.py.
BROADCAST = "*"


def channel_name(prefix: str, node: str) -> str:
    return f"{prefix}:node:{node}"


class MemoryChannels:
    """In-process channels (embedded mode, tests of the pure parts)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[FrameHandler]] = {}
        self._lock = threading.Lock()

    def publish(self, node: str, frame: dict[str, Any]) -> int:
        with self._lock:
            handlers = list(self._handlers.get(node, ()))
        data = json.loads(json.dumps(frame))  # same isolation as a real wire
        for handler in handlers:
            handler(data)
        return len(handlers)

    def subscribe(self, node: str, handler: FrameHandler,
                  on_resubscribed: ResubscribedHandler | None = None) -> Subscription:
        with self._lock:
            self._handlers.setdefault(node, []).append(handler)
        channels = self

        class _Sub:
            def close(self) -> None:
                with channels._lock:
                    lst = channels._handlers.get(node, [])
                    if handler in lst:
                        lst.remove(handler)

        return _Sub()


class RedisChannels:
    """Redis pub/sub: one channel per node, ``{prefix}:node:{name}``."""

    def __init__(self, url: str, prefix: str) -> None:
        self._client = redis_client(url)
        self._url = url
        self._prefix = prefix

    def publish(self, node: str, frame: dict[str, Any]) -> int:
        try:
            return int(self._client.publish(channel_name(self._prefix, node), json.dumps(frame)))
        except redis.RedisError as exc:
            # Nobody heard it; the message keeps its ack deadline and the sweep retries it.
            log.warning("node channel %s: publish failed: %s", node, exc)
            return -1

    def subscribe(self, node: str, handler: FrameHandler,
                  on_resubscribed: ResubscribedHandler | None = None) -> Subscription:
        pubsub = _ResubscribingPubSub(redis_client(self._url).connection_pool, on_resubscribed)

        def on_message(message: dict[str, Any]) -> None:
            try:
                frame = json.loads(message["data"])
            except (ValueError, TypeError):
                return
            if isinstance(frame, dict):
                handler(frame)

        def on_error(exc: BaseException, _pubsub: Any, _thread: Any) -> None:
            # Redis restarted or the link dropped: back off; the next read reconnects and
            # re-subscribes. Frames published meanwhile are lost, and the recovery sweep
            # re-routes their messages once their ack deadline passes.
            log.warning("node channel %s: %s; reconnecting", node, exc)
            time.sleep(0.2)

        pubsub.subscribe(**{channel_name(self._prefix, node): on_message})
        thread = pubsub.run_in_thread(sleep_time=0.5, daemon=True, exception_handler=on_error)

        class _Sub:
            def close(self) -> None:
                thread.stop()
                pubsub.close()

        return _Sub()


class _ResubscribingPubSub(PubSub):
    """A pub/sub connection that reports each re-subscription after a reconnect.

    redis-py re-subscribes in ``on_connect``; once it has sent SUBSCRIBE, every later PUBLISH
    reaches us, so what the subscriber missed is exactly what was published before: the hook
    lets it catch up from the store (the gateway replays its connections' unacked messages).
    """

    def __init__(self, pool: Any, on_resubscribed: ResubscribedHandler | None) -> None:
        super().__init__(pool, ignore_subscribe_messages=True)
        self._on_resubscribed = on_resubscribed

    def on_connect(self, connection: Any) -> None:
        resubscribing = bool(self.channels)  # empty on the first connect
        super().on_connect(connection)
        if resubscribing and self._on_resubscribed is not None:
            try:
                self._on_resubscribed()
            except Exception:
                log.exception("node channel: resubscribe hook failed")
