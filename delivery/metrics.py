"""Prometheus metrics of workers and gateways (prometheus_client, the default registry).

Every process of ours that sets ``DELIVERY_METRICS_PORT`` serves ``/metrics`` on that port
(``start_metrics_server``) for its role: a gateway does not export the worker-only families
(routing, push, sweep, message ages) and a worker not the ``delivery_gateway_*`` ones, so with
every worker down their series are absent instead of 0 from the gateways. Each process also
exports ``delivery_process_role{role}`` = 1 (``worker``, ``gateway``, ``api`` for
``delivery api``, or ``all`` when embedded). Workers feed these from routing decisions, push
results, the recovery sweep and their presence replica (``workers.metrics_wiring``); gateways
feed the ``delivery_gateway_*`` family, acks (``record_delivered``) and their replica's gauges;
``delivery api`` the ``delivery_api_*`` family.

Names (all prefixed ``delivery_``), as listed in docs/operations.md:

- ``messages_total{outcome}``: outcomes reached: delivered, pushed, pending, expired.
- ``routing_decisions_total{decision,trigger}``: every routing decision (dispatch, wait, push,
  markpending, expire, nothing) and why routing ran (new, nack, recheck, deadline).
- ``attempts_per_message``: attempts a message needed to reach its outcome (histogram).
- ``ack_latency_seconds``: from a frame reaching its gateway to the client's ack (histogram).
- ``nacks_total``: connections a gateway reported gone for a dispatched frame.
- ``pushes_total{result}``: ``delivery.push`` runs by outcome (pushed, no_device, failed, ...).
- ``fcm_sends_total{result}``: per-device FCM answers (ok, UNREGISTERED, UNAVAILABLE, ...).
- ``presence_entries``, ``presence_replicas{status}``, ``presence_synced``: the local replica.
- ``presence_replica_downs_total``: replicas the local one saw go down (silent, not a graceful
  leave); it keeps counting after the dead replica is purged from ``presence_replicas``.
- ``sweep_found_total``: stalled messages the recovery sweep re-routed.
- ``oldest_in_flight_age_seconds``: age of the oldest message routing still owns (accepted or
  dispatched): the one to page on. ``oldest_unacked_age_seconds``: of the oldest message not
  acked yet, including pushed/pending/expired ones waiting for their recipient to reconnect.
- ``gateway_connections``, ``gateway_frames_sent_total``, ``gateway_acks_total``,
  ``gateway_nacks_total``, ``gateway_replayed_total``: per gateway process.
- ``api_requests_total{status}``: ``POST /v1/messages`` answers by HTTP status (202, 400, 401,
  413, 429, 503); ``api_in_flight``: sends being stored now (``delivery api`` only).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from delivery.vocabulary import State

OUTCOMES = (State.DELIVERED, State.PUSHED, State.PENDING, State.EXPIRED)

MESSAGES = Counter(
    "delivery_messages", "Messages that reached an outcome", ["outcome"],
)
DECISIONS = Counter(
    "delivery_routing_decisions", "Routing decisions by kind and trigger", ["decision", "trigger"],
)
ATTEMPTS = Histogram(
    "delivery_attempts_per_message", "Attempts a message needed to reach its outcome",
    buckets=(1, 2, 3, 4, 5, 6, 8, 10),
)
ACK_LATENCY = Histogram(
    "delivery_ack_latency_seconds", "Time from a frame reaching its gateway to the client's ack",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
NACKS = Counter("delivery_nacks", "Connections reported gone for a dispatched frame")
PUSHES = Counter("delivery_pushes", "delivery.push runs by outcome", ["result"])
FCM_SENDS = Counter("delivery_fcm_sends", "Per-device FCM answers", ["result"])
PRESENCE_ENTRIES = Gauge("delivery_presence_entries", "Connections in the local replica's view")
PRESENCE_REPLICAS = Gauge(
    "delivery_presence_replicas", "Other replicas known to the local one", ["status"],
)
PRESENCE_SYNCED = Gauge("delivery_presence_synced", "1 when the local replica has synced")
PRESENCE_REPLICA_DOWNS = Counter(
    "delivery_presence_replica_downs", "Replicas the local one saw go down (not a graceful leave)",
)
SWEEP_FOUND = Counter("delivery_sweep_found", "Stalled messages re-routed by the recovery sweep")
OLDEST_IN_FLIGHT_AGE = Gauge(
    "delivery_oldest_in_flight_age_seconds",
    "Age of the oldest accepted or dispatched message (0: none)",
)
OLDEST_UNACKED_AGE = Gauge(
    "delivery_oldest_unacked_age_seconds", "Age of the oldest message not acked yet (0: none)",
)

GATEWAY_CONNECTIONS = Gauge("delivery_gateway_connections", "Open WebSocket connections")
GATEWAY_FRAMES_SENT = Counter("delivery_gateway_frames_sent", "Frames sent to clients")
GATEWAY_ACKS = Counter("delivery_gateway_acks", "Acks received from clients")
GATEWAY_NACKS = Counter("delivery_gateway_nacks", "Nacks sent back to routing")
GATEWAY_REPLAYED = Counter("delivery_gateway_replayed", "Messages replayed on (re)connect")

API_REQUESTS = Counter("delivery_api_requests", "POST /v1/messages answers by HTTP status",
                       ["status"])
API_IN_FLIGHT = Gauge("delivery_api_in_flight", "Sends of this API process being stored now")

for _outcome in OUTCOMES:  # present (at 0) from the first scrape, so rate() works at once
    MESSAGES.labels(_outcome)
for _status in ("up", "down"):
    PRESENCE_REPLICAS.labels(_status)
for _result in ("pushed", "no_device", "failed"):  # the push alert's ratio needs them at 0
    PUSHES.labels(_result)
for _status in ("202", "429", "503"):  # likewise the API alert's
    API_REQUESTS.labels(_status)

ROLES = ("worker", "gateway", "api", "all")
# Families only one role feeds; every other family (outcomes, attempts, presence, the Python
# process) is exported by both.
WORKER_ONLY = frozenset({
    "delivery_routing_decisions", "delivery_pushes", "delivery_fcm_sends", "delivery_sweep_found",
    "delivery_oldest_in_flight_age_seconds", "delivery_oldest_unacked_age_seconds",
})
GATEWAY_ONLY = frozenset({
    "delivery_gateway_connections", "delivery_gateway_frames_sent", "delivery_gateway_acks",
    "delivery_gateway_nacks", "delivery_gateway_replayed", "delivery_ack_latency_seconds",
})
API_ONLY = frozenset({"delivery_api_requests", "delivery_api_in_flight"})


class RoleView:
    """The default registry as one role exports it, plus ``delivery_process_role{role}``."""

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        self.role = role
        self.hidden = {"worker": GATEWAY_ONLY | API_ONLY, "gateway": WORKER_ONLY | API_ONLY,
                       "api": WORKER_ONLY | GATEWAY_ONLY}.get(role, frozenset())

    def collect(self) -> list[Metric]:
        info = GaugeMetricFamily("delivery_process_role", "1: the role this process runs",
                                 labels=["role"])
        info.add_metric([self.role], 1)
        return [info, *(m for m in REGISTRY.collect() if m.name not in self.hidden)]


def role_registry(role: str) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RoleView(role))
    return registry


_server_lock = threading.Lock()
_server_port: int | None = None


def start_metrics_server(port: int, addr: str = "0.0.0.0", role: str = "all") -> int | None:
    """Serve ``/metrics`` for ``role`` on ``port`` in a daemon thread (once per process).
    0 = off. Returns the port served, or None when off.
    """
    global _server_port
    if port <= 0:
        return None
    with _server_lock:
        if _server_port is None:
            start_http_server(port, addr=addr, registry=role_registry(role))
            _server_port = port
        return _server_port


def record_outcome(outcome: str, attempts: int | None = None) -> None:
    """A message reached ``outcome`` (one of ``OUTCOMES``) after ``attempts`` attempts."""
    MESSAGES.labels(outcome).inc()
    if attempts is not None and attempts > 0:
        ATTEMPTS.observe(attempts)


def record_delivered(latency_s: float | None, attempts: int | None = None) -> None:
    """A client's ack won (the message is delivered): the gateway calls this per won ack."""
    record_outcome(State.DELIVERED, attempts)
    if latency_s is not None and latency_s >= 0:
        ACK_LATENCY.observe(latency_s)


_seen_down: set[str] = set()
_seen_down_lock = threading.Lock()


def update_presence(stats: Mapping[str, Any]) -> None:
    """Set the presence gauges from ``PresenceNode.stats()``; count replicas newly down."""
    with _seen_down_lock:
        down = {str(r) for r in stats.get("replicas_down", ())}
        new = down - _seen_down
        if new:
            PRESENCE_REPLICA_DOWNS.inc(len(new))
        # Keep the ones still down (a replica back up and down again counts again).
        _seen_down.intersection_update(down)
        _seen_down.update(down)
    PRESENCE_ENTRIES.set(int(stats.get("entries", 0)))
    PRESENCE_REPLICAS.labels("up").set(len(stats.get("replicas_up", ())))
    PRESENCE_REPLICAS.labels("down").set(len(stats.get("replicas_down", ())))
    PRESENCE_SYNCED.set(1 if stats.get("synced") else 0)


def update_ages(oldest_in_flight: datetime | None, oldest_unacked: datetime | None,
                now: datetime | None = None) -> None:
    """Set the age gauges from the store's oldest creation times (naive times are UTC)."""
    now = now or datetime.now(UTC)
    for gauge, at in ((OLDEST_IN_FLIGHT_AGE, oldest_in_flight),
                      (OLDEST_UNACKED_AGE, oldest_unacked)):
        if at is None:
            gauge.set(0)
            continue
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        gauge.set(max(0.0, (now - at).total_seconds()))


_GATEWAY_COUNTERS = {
    "frames_sent": GATEWAY_FRAMES_SENT,
    "acks": GATEWAY_ACKS,
    "nacks": GATEWAY_NACKS,
    "replayed": GATEWAY_REPLAYED,
}
_gateway_seen: dict[tuple[str, str], float] = {}
_gateway_conns: dict[str, int] = {}
_gateway_lock = threading.Lock()


def update_gateway(snapshot: Mapping[str, Any], source: str = "") -> None:
    """Feed the gateway metrics from ``Gateway.snapshot()`` (cumulative counters).

    For a gateway that prefers one periodic call to instrumenting its hot path: counters advance
    by the growth since the previous call of the same ``source`` (the gateway's node name: one
    process may run several gateways, as the embedded demo does); ``connections`` is a gauge
    summed over the sources.
    """
    with _gateway_lock:
        if "connections" in snapshot:
            _gateway_conns[source] = int(snapshot["connections"])
            GATEWAY_CONNECTIONS.set(sum(_gateway_conns.values()))
        for key, counter in _GATEWAY_COUNTERS.items():
            if key not in snapshot:
                continue
            value = float(snapshot[key])
            seen = _gateway_seen.get((source, key), 0.0)
            if value > seen:
                counter.inc(value - seen)
                _gateway_seen[(source, key)] = value


def forget_gateway(source: str) -> None:
    """A gateway stopped: drop its connections from the gauge and its counter baseline."""
    with _gateway_lock:
        _gateway_conns.pop(source, None)
        GATEWAY_CONNECTIONS.set(sum(_gateway_conns.values()))
        for key in [k for k in _gateway_seen if k[0] == source]:
            del _gateway_seen[key]
