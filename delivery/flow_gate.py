"""The I/O of producer flow control: read a broker queue's depth, keep the reading, and apply
the pure decisions of :mod:`delivery.flow`.

One :class:`Gate` per (broker, queue) and process, shared by every producer thread. A send
asks :meth:`Gate.check`: the cached reading answers in the common case; when it is older than
``DELIVERY_BACKLOG_REFRESH_MS``, one thread reads the depth again (``LLEN`` of the queue's list
on Redis, a passive ``queue_declare`` on RabbitMQ: one round trip) while the others keep using
the previous reading. A read that fails admits sends for a second before the next try: the
probe adds no failure of its own (an unreachable broker is reported by the enqueue, as before).
The embedded, in-process broker has no backlog to bound: nothing is read there.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from celery import Celery

from delivery.celery_app import broker_kind
from delivery.flow import (
    ADMIT,
    Admit,
    FlowConfig,
    Reading,
    Refresh,
    Refuse,
    admitted,
    decide,
    decide_after_refresh,
    observe,
    observe_failure,
)

log = logging.getLogger("delivery.flow")

# Socket timeouts of the depth probe (seconds): a broker that stops answering costs one slow
# read, then FAILURE_BACKOFF_S without reads.
PROBE_CONNECT_TIMEOUT_S = 1.0
PROBE_TIMEOUT_S = 1.0

DepthReader = Callable[[], int]


class Gate:
    """Admission for the sends whose task goes to one queue of one broker."""

    def __init__(self, read_depth: DepthReader, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read_depth
        self._clock = clock
        self._reading: Reading | None = None
        self._lock = threading.Lock()  # guards _reading
        self._refreshing = threading.Lock()  # one reader at a time
        self.reads = 0
        self.failures = 0

    @property
    def reading(self) -> Reading | None:
        return self._reading

    def check(self, config: FlowConfig) -> Admit | Refuse:
        """Admit a send (counted on top of the reading) or refuse it."""
        if not config.enabled:
            return ADMIT
        with self._lock:
            d = decide(config, self._reading, self._clock())
            if not isinstance(d, Refresh):
                return self._count(d)
        return self._refresh(config)

    def _count(self, d: Admit | Refuse) -> Admit | Refuse:
        """(Under ``_lock``.) An admitted send counts on top of the reading."""
        if isinstance(d, Admit) and self._reading is not None:
            self._reading = admitted(self._reading)
        return d

    def _refresh(self, config: FlowConfig) -> Admit | Refuse:
        if not self._refreshing.acquire(blocking=False):
            # Another thread is reading: decide on the previous reading, if any.
            with self._lock:
                if self._reading is None:
                    return ADMIT
                return self._count(decide_after_refresh(config, self._reading))
        try:
            try:
                depth = self._read()
            except Exception as exc:  # the broker is down or slow: admit, try again later
                self.failures += 1
                log.warning("flow control: the queue depth could not be read (%s); "
                            "admitting sends for now", type(exc).__name__)
                with self._lock:
                    self._reading = observe_failure(self._reading, self._clock())
                return ADMIT
            self.reads += 1
            with self._lock:
                self._reading = observe(self._reading, depth, self._clock())
                return self._count(decide_after_refresh(config, self._reading))
        finally:
            self._refreshing.release()


# -- depth readers ----------------------------------------------------------------------------


class RedisDepth:
    """``LLEN`` of the queue's list (kombu's Redis transport: tasks without a priority wait in
    the list named after the queue, under the transport's ``global_keyprefix``)."""

    def __init__(self, url: str, key: str) -> None:
        import redis

        self.key = key
        self._client = redis.Redis.from_url(url, socket_connect_timeout=PROBE_CONNECT_TIMEOUT_S,
                                            socket_timeout=PROBE_TIMEOUT_S)

    def __call__(self) -> int:
        return int(self._client.llen(self.key))

    def close(self) -> None:
        self._client.close()


class AmqpDepth:
    """The ready messages of the queue, from a passive ``queue_declare`` (RabbitMQ counts the
    messages delivered to consumers and not acked apart: those are held by workers, within
    their prefetch window). A queue that does not exist yet holds nothing."""

    def __init__(self, url: str, queue: str, transport_options: dict[str, Any]) -> None:
        self.url, self.queue = url, queue
        self._options = transport_options
        self._conn: Any = None

    def __call__(self) -> int:
        from kombu.connection import Connection

        try:
            if self._conn is None:
                self._conn = Connection(self.url, connect_timeout=PROBE_CONNECT_TIMEOUT_S,
                                        transport_options=self._options)
            channel = self._conn.default_channel
            try:
                _, count, _ = channel.queue_declare(queue=self.queue, passive=True)
            except Exception as exc:
                if getattr(exc, "code", None) == 404:  # NOT_FOUND closed the channel
                    self.close()
                    return 0
                raise
            return int(count)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.release()


def depth_reader(app: Celery, queue: str) -> DepthReader | None:
    """How to read ``queue``'s depth on ``app``'s broker; None when there is nothing to bound
    (the in-process broker) or no way to read it."""
    url = str(app.conf.broker_url or "")
    kind = broker_kind(url)
    options = dict(app.conf.broker_transport_options or {})
    if kind == "redis":
        return RedisDepth(url, f"{options.get('global_keyprefix', '')}{queue}")
    if kind == "amqp":
        return AmqpDepth(url, queue, {k: v for k, v in options.items()
                                      if k != "confirm_publish"})
    return None


# -- one gate per broker and queue, per process -------------------------------------------------

_gates: dict[tuple[str, str], Gate | None] = {}
_gates_lock = threading.Lock()


# Per app: (broker URL, routed?, default queue). Reading Celery's configuration costs ~17 µs a
# key; these do not change once the app sends.
_facts: weakref.WeakKeyDictionary[Celery, tuple[str, bool, str]] = weakref.WeakKeyDictionary()


def _app_facts(app: Celery) -> tuple[str, bool, str]:
    unwrap = getattr(app, "_get_current_object", None)  # a Proxy (producer_app, current_app)
    if unwrap is not None:
        app = unwrap()
    facts = _facts.get(app)
    if facts is None:
        facts = _facts[app] = (str(app.conf.broker_url or ""), bool(app.conf.task_routes),
                               str(app.conf.task_default_queue or "celery"))
    return facts


def queue_of(app: Celery, task_name: str, kwargs: dict[str, Any]) -> str:
    """The queue ``app`` sends ``task_name`` with these kwargs to (its routes, e.g. shards)."""
    _, routed, default = _app_facts(app)
    if not routed:
        return default
    queue = app.amqp.router.route({}, task_name, (), kwargs).get("queue")
    name = getattr(queue, "name", queue)
    return str(name or default)


def gate_for(app: Celery, queue: str) -> Gate | None:
    key = (_app_facts(app)[0], queue)
    gate = _gates.get(key)
    if gate is not None or key in _gates:
        return gate
    with _gates_lock:
        if key not in _gates:
            reader = depth_reader(app, queue)
            _gates[key] = Gate(reader) if reader is not None else None
        return _gates[key]


def check(app: Celery, task_name: str, kwargs: dict[str, Any],
          config: FlowConfig) -> Admit | Refuse:
    """Admit or refuse one send of ``task_name`` on ``app`` (ADMIT when flow control is off or
    the broker is in-process)."""
    if not config.enabled:
        return ADMIT
    gate = gate_for(app, queue_of(app, task_name, kwargs))
    return ADMIT if gate is None else gate.check(config)


def reset() -> None:
    """Forget every gate (tests, and settings changed in one process)."""
    with _gates_lock:
        for gate in _gates.values():
            close = getattr(getattr(gate, "_read", None), "close", None)
            if close is not None:
                close()
        _gates.clear()
