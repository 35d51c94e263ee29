"""Capacity model of presence replication: what one replica receives, sends and holds.

Pure arithmetic (no I/O, no clock). Two designs:

* **shared** (S = 1, today): every gateway and every worker runs a full replica on one Redis
  channel. Each replica heartbeats every ``heartbeat_s`` with its whole version vector (one
  entry per replica in the cluster), each gateway broadcasts its own connects and disconnects
  as deltas batched over ``batch_s``, and Redis delivers every frame to every replica (the
  publisher hears its own echo too).
* **sharded** (S > 1): users are hashed to S shards, one Redis channel each. A worker serves
  ``shards_per_worker`` shards and replicates only those; the R = W * k / S workers of a shard
  heartbeat on its channel with a vector of the shard's origins. Gateways only write: they
  publish each user's deltas to that user's shard and, per shard they have users in, a
  heartbeat carrying their own counter (every ``gateway_heartbeat_s``); they hold only their
  own connections and subscribe to no shard channel.

Traffic is counted in frames and bytes on the Redis link of one replica; frame sizes come from
:class:`WireSizes` (measured on the real encoder by :func:`wire_sizes`). Convergence after a
join is the batching wait plus Redis fan-out plus the receiver's queue, each as percentiles,
with the receiver modelled as an M/M/1 queue of frames (a conservative tail).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = [
    "Budget",
    "Costs",
    "Deployment",
    "Estimate",
    "ReplicaLoad",
    "WireSizes",
    "choose_shards",
    "estimate",
    "wire_sizes",
]


@dataclass(frozen=True)
class WireSizes:
    """Frame sizes in bytes: ``hb_base + hb_origin * n`` for a heartbeat with n clock entries,
    ``delta_base + delta_event * m`` for a delta of m events (joins and leaves averaged)."""

    # measured on the encoder (``wire_sizes()``, wire version 2: columns)
    hb_base: float = 26.0
    hb_origin: float = 21.0
    delta_base: float = 69.0
    delta_event: float = 30.0

    def heartbeat(self, origins: float) -> float:
        return self.hb_base + self.hb_origin * origins

    def delta(self, events: float) -> float:
        return self.delta_base + self.delta_event * events


@dataclass(frozen=True)
class Costs:
    """Per-unit costs. Defaults measured on the project's machines (see docs/scaling.md)."""

    wire: WireSizes = field(default_factory=WireSizes)
    # resident memory per presence entry at 10^6 entries, strings included (bench presence
    # --compare, fresh process; 262 B before the per-origin tables)
    entry_bytes: float = 183.0
    frame_us: float = 40.0  # receiving one frame: Redis client, decode, dispatch
    origin_us: float = 0.25  # per clock entry of a received heartbeat (0.6 with row clocks)
    event_us: float = 0.8  # per delta event decoded and merged (CPU; 2.3 with row frames)
    redis_publish_us: float = 16.0  # one PUBLISH (NOTES.md: ~60k PUBLISH/s per Redis node)
    redis_delivery_us: float = 1.0  # Redis writing one pub/sub message to one subscriber
    net_ms: float = 0.2  # one network hop (client -> Redis or Redis -> client)


@dataclass(frozen=True)
class Deployment:
    users: int  # connected users U
    gateways: int  # G
    workers: int  # W
    churn_per_min: float = 0.1  # reconnects per connected user per minute (a leave and a join)
    msg_rate: float = 0.0  # messages per second (node-channel frames, one per message)
    shards: int = 1  # S; 1 is today's shared design
    shards_per_worker: int = 1  # k: shards each worker serves (sharded design)
    heartbeat_s: float = 0.25
    gateway_heartbeat_s: float = 0.25  # sharded: a gateway's per-shard heartbeat period
    batch_s: float = 0.005
    redis_nodes: int = 1  # Redis (Cluster) nodes the shard channels are spread over

    def __post_init__(self) -> None:
        if min(self.users, self.gateways, self.workers, self.shards,
               self.shards_per_worker, self.redis_nodes) < 1:
            raise ValueError("users, gateways, workers, shards, shards_per_worker and "
                             "redis_nodes must be >= 1")
        if self.shards > 1 and self.workers * self.shards_per_worker < self.shards:
            raise ValueError("every shard needs a worker: workers * shards_per_worker >= shards")
        if self.heartbeat_s <= 0 or self.gateway_heartbeat_s <= 0 or self.batch_s < 0:
            raise ValueError("heartbeat periods must be > 0 and batch_s >= 0")
        if self.churn_per_min < 0 or self.msg_rate < 0:
            raise ValueError("churn_per_min and msg_rate must be >= 0")

    @property
    def replicas(self) -> int:
        return self.gateways + self.workers

    @property
    def events_per_s(self) -> float:
        """Presence events in the whole cluster: a leave and a join per reconnect."""
        return 2.0 * self.users * self.churn_per_min / 60.0


@dataclass(frozen=True)
class ReplicaLoad:
    role: str
    frames_in: float
    bytes_in: float
    frames_out: float
    bytes_out: float
    entries: float
    memory_bytes: float
    cpu: float  # fraction of one core spent receiving presence frames
    convergence_p50_ms: float  # a join made on a gateway, visible on this replica
    convergence_p99_ms: float


@dataclass(frozen=True)
class Estimate:
    deployment: Deployment
    design: str  # "shared" or "sharded"
    gateway: ReplicaLoad
    worker: ReplicaLoad
    publishes_per_s: float  # presence frames published to Redis, whole cluster
    deliveries_per_s: float  # presence frames Redis writes to subscribers, whole cluster
    redis_node_utilisation: float  # of the busiest Redis node, for presence pub/sub alone
    node_channel_deliveries_per_s: float
    redis_nodes_needed: int = 1  # to keep each Redis node's presence pub/sub under half a core
    messages_lost: int = 0  # presence lag costs retries and pushes, never a message
    limits: tuple[str, ...] = ()


@dataclass(frozen=True)
class Budget:
    """What a node may spend on presence (the issue's targets for 10^7 users on 10^3 nodes)."""

    bytes_in_per_s: float = 1e6
    memory_bytes: float = 500e6
    convergence_p99_ms: float = 100.0
    cpu: float = 0.5


def batched_frames(events_per_s: float, batch_s: float) -> float:
    """Frames per second from Poisson events with leading-edge batching (``presence.replica``):
    an event after a quiet window goes out at once; the events that follow within ``batch_s``
    of a frame go out together at the end of that window, which opens the next one. A busy
    period sends 1/p frames (p = P(a window stays empty) = exp(-e·b)) and lasts 1/e + b/p."""
    if batch_s <= 0 or events_per_s <= 0:
        return events_per_s
    p = math.exp(-events_per_s * batch_s)
    return events_per_s / (p + events_per_s * batch_s)


def batch_wait_ms(events_per_s: float, batch_s: float, q: float) -> float:
    """Quantile ``q`` of an event's wait for its frame: the event that opens a busy period is
    sent at once (a fraction p / (p + e·b) of the events), a later one waits for the end of
    its window (uniform in [0, batch_s])."""
    if batch_s <= 0 or events_per_s <= 0:
        return 0.0
    p = math.exp(-events_per_s * batch_s)
    opener = p / (p + events_per_s * batch_s)
    if q <= opener:
        return 0.0
    return batch_s * 1000.0 * (q - opener) / (1.0 - opener)


def mm1_wait_ms(arrivals_per_s: float, busy: float, q: float) -> float:
    """Quantile ``q`` of the wait in an M/M/1 queue at utilisation ``busy``: P(W > t) =
    busy * exp(-(mu - lambda) t). Infinite when the server cannot keep up."""
    if busy >= 1.0:
        return math.inf
    if arrivals_per_s <= 0 or busy <= 1.0 - q:
        return 0.0
    mu = arrivals_per_s / busy
    return 1000.0 * math.log(busy / (1.0 - q)) / (mu - arrivals_per_s)


def _touched(shards: int, users_per_gateway: float) -> float:
    """Expected shards in which a gateway holds at least one user."""
    if shards == 1:
        return 1.0
    miss: float = (1.0 - 1.0 / shards) ** users_per_gateway
    return shards * (1.0 - miss)


def _receive(costs: Costs, frames: float, hb_frames: float, hb_origins: float,
             events: float) -> float:
    """CPU seconds per second to receive this traffic."""
    return 1e-6 * (frames * costs.frame_us + hb_frames * hb_origins * costs.origin_us
                   + events * costs.event_us)


def estimate(d: Deployment, costs: Costs | None = None) -> Estimate:
    c = costs or Costs()
    w = c.wire
    ev = d.events_per_s
    if d.shards == 1:
        return _shared(d, c, w, ev)
    return _sharded(d, c, w, ev)


def _shared(d: Deployment, c: Costs, w: WireSizes, ev: float) -> Estimate:
    n = d.replicas
    hb = 1.0 / d.heartbeat_s
    e_g = ev / d.gateways  # events of one gateway
    f_g = batched_frames(e_g, d.batch_s)  # its delta frames
    m_g = e_g / f_g if f_g else 0.0  # events per delta frame
    hb_bytes = w.heartbeat(n)
    frames_in = n * hb + d.gateways * f_g
    bytes_in = n * hb * hb_bytes + d.gateways * f_g * w.delta(m_g)
    cpu = _receive(c, frames_in, n * hb, n, ev)
    fanout = n
    publishes = frames_in
    deliveries = publishes * fanout
    # one channel lives on one Redis node, however many the deployment has
    conv = _convergence(d, c, e_g, fanout, frames_in, cpu, deliveries, publishes, 1)
    entries = float(d.users)

    def load(role: str, frames_out: float, bytes_out: float) -> ReplicaLoad:
        return ReplicaLoad(role, frames_in, bytes_in, frames_out, bytes_out, entries,
                           entries * c.entry_bytes, cpu, *conv)

    gw = load("gateway", hb + f_g, hb * hb_bytes + f_g * w.delta(m_g))
    wk = load("worker", hb, hb * hb_bytes)
    return _finish(d, "shared", gw, wk, publishes, deliveries, c)


def _sharded(d: Deployment, c: Costs, w: WireSizes, ev: float) -> Estimate:
    s, k = d.shards, d.shards_per_worker
    r = d.workers * k / s  # worker replicas per shard
    per_gw_users = d.users / d.gateways
    touched = _touched(s, per_gw_users)  # shards a gateway writes to
    g_s = d.gateways * touched / s  # gateways writing to one shard
    e_gs = ev / (d.gateways * touched)  # events of one gateway in one shard
    f_gs = batched_frames(e_gs, d.batch_s)
    m_gs = e_gs / f_gs if f_gs else 0.0
    ghb = 1.0 / d.gateway_heartbeat_s
    whb = 1.0 / d.heartbeat_s
    origins = g_s + r  # clock entries of a worker heartbeat in one shard
    # one shard channel, per second
    sh_frames = g_s * (ghb + f_gs) + r * whb
    sh_bytes = (g_s * (ghb * w.heartbeat(1) + f_gs * w.delta(m_gs))
                + r * whb * w.heartbeat(origins))
    sh_events = ev / s
    frames_in = k * sh_frames
    cpu = _receive(c, frames_in, k * (g_s * ghb), 1.0, k * sh_events) + _receive(
        c, 0.0, k * r * whb, origins, 0.0)
    publishes = s * sh_frames
    deliveries = publishes * r
    conv = _convergence(d, c, e_gs, r, frames_in, cpu, deliveries, publishes,
                        min(d.redis_nodes, s))
    entries = k * d.users / s
    wk = ReplicaLoad("worker", frames_in, k * sh_bytes, k * whb, k * whb * w.heartbeat(origins),
                     entries, entries * c.entry_bytes, cpu, *conv)
    gw_out_frames = touched * (ghb + f_gs)
    gw_out_bytes = touched * (ghb * w.heartbeat(1) + f_gs * w.delta(m_gs))
    gw = ReplicaLoad("gateway", 0.0, 0.0, gw_out_frames, gw_out_bytes, per_gw_users,
                     per_gw_users * c.entry_bytes, 0.0, 0.0, 0.0)
    return _finish(d, "sharded", gw, wk, publishes, deliveries, c)


def _convergence(d: Deployment, c: Costs, gw_events: float, fanout: float, frames_in: float,
                 cpu: float, deliveries: float, publishes: float,
                 redis_nodes: int) -> tuple[float, float]:
    """p50 and p99 (ms) of a join reaching a replica: batching, two hops, Redis fan-out and
    queue, the receiver's queue and its own work (percentiles added: conservative)."""
    busy_redis = _redis_busy(c, publishes, deliveries) / redis_nodes
    per_frame_ms = cpu / frames_in * 1000.0 if frames_in else 0.0
    out = []
    for q in (0.5, 0.99):
        t = (batch_wait_ms(gw_events, d.batch_s, q) + 2 * c.net_ms
             + fanout * q * c.redis_delivery_us / 1000.0
             + mm1_wait_ms(publishes / redis_nodes, busy_redis, q)
             + mm1_wait_ms(frames_in, cpu, q) + per_frame_ms)
        out.append(t)
    return out[0], out[1]


def _redis_busy(c: Costs, publishes: float, deliveries: float) -> float:
    """Redis CPU seconds per second for presence pub/sub (all nodes together)."""
    return 1e-6 * (publishes * c.redis_publish_us + deliveries * c.redis_delivery_us)


def _finish(d: Deployment, design: str, gw: ReplicaLoad, wk: ReplicaLoad, publishes: float,
            deliveries: float, c: Costs) -> Estimate:
    # a shared channel lives on one node; shard channels spread over at most S nodes
    nodes = d.redis_nodes if design == "sharded" else 1
    busy = _redis_busy(c, publishes, deliveries) / min(nodes, d.shards)
    needed = max(1, math.ceil(_redis_busy(c, publishes, deliveries) / 0.5))
    est = Estimate(d, design, gw, wk, publishes, deliveries, busy, d.msg_rate, needed)
    return dataclasses.replace(est, limits=limits(est))


def limits(e: Estimate, budget: Budget | None = None) -> tuple[str, ...]:
    """The budgets this deployment exceeds, worst replica first."""
    b = budget or Budget()
    out: list[str] = []
    for r in (e.worker, e.gateway):
        if r.bytes_in > b.bytes_in_per_s:
            out.append(f"{r.role}: {r.bytes_in / 1e6:.1f} MB/s in > {b.bytes_in_per_s / 1e6:g}")
        if r.memory_bytes > b.memory_bytes:
            out.append(f"{r.role}: {r.memory_bytes / 1e6:.0f} MB > {b.memory_bytes / 1e6:g} MB")
        if r.cpu > b.cpu:
            out.append(f"{r.role}: receive CPU {r.cpu:.2f} core > {b.cpu:g}")
        if r.convergence_p99_ms > b.convergence_p99_ms:
            out.append(f"{r.role}: convergence p99 {r.convergence_p99_ms:.0f} ms > "
                       f"{b.convergence_p99_ms:g}")
    if e.redis_node_utilisation >= 1.0:
        out.append(f"redis: {e.redis_node_utilisation:.1f}x one node's pub/sub capacity")
    return tuple(dict.fromkeys(out))


def choose_shards(users: int, workers: int, users_per_shard: int = 100_000,
                  max_replicas: int = 8, min_replicas: int = 2) -> int:
    """S for the sharded design: at most ``users_per_shard`` users a shard (a worker's memory
    and delta traffic) and at most ``max_replicas`` workers a shard (every worker heartbeat
    carries the shard's whole clock), but at least ``min_replicas`` workers a shard."""
    want = max(math.ceil(users / users_per_shard), math.ceil(workers / max_replicas))
    return max(1, min(workers // min_replicas, want))


def wire_sizes(name_len: int = 6, key: str = "user-0000123", conn: str = "c-0000007b",
               meta: dict[str, str] | None = None, counter: int = 100_000) -> WireSizes:
    """Measure :class:`WireSizes` on the real encoder (``presence.wire``); ``counter``: a
    typical event counter (its msgpack width counts in every clock entry and event)."""
    from presence import wire
    from presence.state import DeltaPart, Event

    inc = 1_764_000_000_000_000  # microseconds: the width of a real incarnation
    me = ("n" * name_len, inc)
    m = {"device": "ios"} if meta is None else meta

    def clock(n: int) -> dict[tuple[str, int], int]:
        return {(f"{i:0{name_len}d}", inc + i): counter + i for i in range(n)}

    h1, h101 = (len(wire.encode_heartbeat(me, clock(n))) for n in (1, 101))

    def delta(events: int) -> int:
        evs = tuple(Event(counter + i, key, conn, m if i % 2 == 0 else None)
                    for i in range(events))
        return len(wire.encode_delta(me, [DeltaPart(me, counter, counter + events, evs)]))

    d2, d102 = delta(2), delta(102)
    per_event = (d102 - d2) / 100.0
    per_origin = (h101 - h1) / 100.0
    return WireSizes(hb_base=h1 - per_origin, hb_origin=per_origin,
                     delta_base=d2 - 2 * per_event, delta_event=per_event)
