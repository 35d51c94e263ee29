"""Scenario parameters of the simulation (every knob, with the presets of each scenario)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCENARIOS", "Params", "scenario_params"]


@dataclass(frozen=True)
class Params:
    """Every knob of one run. Times in seconds unless the name says ``_ms``."""

    scenario: str = "seed"
    messages: int = 100_000
    seed: int = 1
    # topology and traffic
    users: int = 500
    gateways: int = 2
    workers: int = 2
    rate: float = 2000.0  # messages per virtual second (Poisson)
    # user behaviour: connected for Exp(session_s), then offline for Exp(gap_s), then reconnect
    session_s: float = 24.0
    gap_s: float = 1.0
    same_node: float = 1.0  # probability that a reconnect lands on the same gateway
    # presence replication: each directed replica-to-replica link has its own latency, drawn
    # uniformly from [delay * (1 - jitter), delay * (1 + jitter)] and drawn again every
    # link_change_s (a link is slow for a while); frames on a link stay in order unless
    # repl_frame_jitter_ms adds per-frame noise (which reorders them). loss: per frame.
    repl_delay_ms: float = 100.0
    repl_jitter: float = 0.5
    link_change_s: float = 5.0
    repl_frame_jitter_ms: float = 0.0
    repl_loss: float = 0.0
    heartbeat_ms: float = 250.0
    batch_ms: float = 5.0
    down_s: float = 3.0
    purge_s: float = 60.0
    log_size: int = 256  # presence recent-event log per origin (transfer extraction cost)
    # node channel (worker <-> gateway, Redis pub/sub) and client link (gateway <-> client)
    node_latency_ms: float = 1.0
    client_latency_ms: float = 25.0
    db_latency_ms: float = 2.0
    frame_loss: float = 0.0  # a node-channel frame (deliver or nack) is lost
    # silent disconnects: the gateway notices only after detect_s (half-open TCP)
    half_open: float = 0.0
    detect_s: float = 5.0
    # crashes: mean up time between crashes (0 = never) and mean down time
    gateway_crash_s: float = 0.0
    worker_crash_s: float = 0.0
    downtime_s: float = 5.0
    # partitions of presence replication: mean time between, mean duration (0 = never)
    partition_every_s: float = 0.0
    partition_s: float = 10.0
    # FCM
    fcm_unregistered: float = 0.0  # fraction of users whose device token is unregistered
    fcm_no_device: float = 0.0  # fraction of users without any device
    fcm_transient: float = 0.0  # probability that one FCM call fails transiently
    fcm_latency_ms: float = 300.0
    # the "registry" strategy: a strongly consistent connection registry, one linearizable
    # read per message and one write per connect or disconnect (round trips, mean +-50 %)
    registry_lookup_ms: float = 2.0
    registry_write_ms: float = 2.0
    push_max_retries: int = 3
    # the sender's app retries a send (same client message id) with this probability
    dup_send: float = 0.0
    # members of each message's conversation but the sender: each message goes to this many
    # distinct users (a group message: one task, one worker's presence view for all); every
    # outcome and count is then per recipient
    group_size: int = 1
    # routing policy (delivery.routing.policy.PolicyConfig) and message TTL
    ack_timeout_s: float = 2.0
    max_attempts: int = 3
    retry_backoff_s: float = 0.2
    offline_grace_s: float = 0.25
    reconnect_window_s: float = 1.0
    probe_last_node: bool = True  # ask the user's last gateway before pushing
    not_synced_wait_s: float = 0.1
    push_enabled: bool = True
    ttl_s: float = 86_400.0
    sweep_s: float = 0.5
    # phases
    warmup_s: float = 3.0
    drain_s: float = 60.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.messages < 0:
            raise ValueError("messages must be >= 0")
        if self.users < 1 or self.gateways < 1 or self.workers < 1:
            raise ValueError("users, gateways and workers must be >= 1")
        if self.rate <= 0 or self.session_s <= 0 or self.gap_s <= 0:
            raise ValueError("rate, session_s and gap_s must be > 0")
        for name in ("same_node", "repl_loss", "frame_loss", "half_open", "fcm_unregistered",
                     "fcm_no_device", "fcm_transient", "dup_send"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1] (got {v!r})")
        if not 0.0 <= self.repl_jitter <= 1.0:
            raise ValueError("repl_jitter must be in [0, 1]")
        for name in ("repl_delay_ms", "repl_frame_jitter_ms", "link_change_s", "node_latency_ms",
                     "client_latency_ms", "db_latency_ms", "fcm_latency_ms", "detect_s",
                     "registry_lookup_ms", "registry_write_ms",
                     "gateway_crash_s", "worker_crash_s", "partition_every_s", "batch_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.downtime_s <= 0 or self.partition_s <= 0 or self.sweep_s <= 0:
            raise ValueError("downtime_s, partition_s and sweep_s must be > 0")
        if not 1 <= self.group_size <= self.users:
            raise ValueError("group_size must be in [1, users]")
        if self.group_size > 1 and self.dup_send:
            raise ValueError("dup_send is modelled for direct messages only (group_size 1)")
        if self.fcm_unregistered + self.fcm_no_device > 1:
            raise ValueError("fcm_unregistered + fcm_no_device must be <= 1")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        return d


SCENARIOS: dict[str, dict[str, Any]] = {
    # The article: a user reconnects on the same node while the worker's replica lags.
    "seed": {},
    # Everything that can go wrong at once.
    "chaos": {
        "messages": 100_000,
        "users": 300,
        "gateways": 3,
        "workers": 3,
        "rate": 1000.0,
        "session_s": 10.0,
        "gap_s": 2.0,
        "same_node": 0.5,
        "repl_delay_ms": 150.0,
        "repl_frame_jitter_ms": 20.0,
        "repl_loss": 0.01,
        "frame_loss": 0.002,
        "half_open": 0.2,
        "detect_s": 5.0,
        "gateway_crash_s": 60.0,
        "worker_crash_s": 60.0,
        "downtime_s": 5.0,
        "partition_every_s": 20.0,
        "partition_s": 8.0,
        "purge_s": 20.0,
        "fcm_unregistered": 0.05,
        "fcm_no_device": 0.02,
        "fcm_transient": 0.1,
        "dup_send": 0.01,
        "ttl_s": 20.0,
    },
    # The seed's race for group messages: 2,000 messages to 50 recipients each (100,000
    # recipient deliveries at the seed's 2,000 per second).
    "group": {
        "messages": 2_000,
        "group_size": 50,
        "rate": 40.0,
    },
    # Many nodes and users.
    "scale": {
        "messages": 300_000,
        "users": 10_000,
        "gateways": 8,
        "workers": 4,
        "rate": 5000.0,
        "session_s": 300.0,
        "gap_s": 2.0,
        "same_node": 0.7,
    },
}


def scenario_params(name: str, **overrides: Any) -> Params:
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)})")
    kw: dict[str, Any] = {**SCENARIOS[name], **{k: v for k, v in overrides.items()
                                                  if v is not None}}
    kw["scenario"] = name
    return Params(**kw)
