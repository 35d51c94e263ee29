"""The discrete-event simulation of the lost-message race: naive presence routing vs the pipeline.

Real code driven here: :class:`presence.replica.Replica` (one per gateway and worker node, the
CRDT state inside it), :class:`presence.transport.memory.MemoryNetwork` (virtual mode: latency,
loss, partitions) and :func:`delivery.routing.policy.decide`. Simulated: users and their
connections, the gateways' connection tables, the node channels (worker -> gateway frames, nacks,
acks), the message store, the push task and FCM, and the clients (which dedupe by message id).

Everything runs on one virtual clock, ``self.now``; one heap of events ``(time, seq, fn, arg)``
orders them (``seq`` breaks ties deterministically). Nothing reads the wall clock and every random
draw comes from a ``random.Random`` seeded from the run's seed, so the same parameters give the
same result, byte for byte. Three independent random streams keep the strategies from perturbing
the world: ``world`` (users, traffic, crashes, partitions), ``naive`` and ``pipeline`` (their
own latencies and FCM draws).

Speed: a connection's end is drawn when it opens and a node's crash when it starts, so the fate
of a frame (shown? acked?) is computed when it is sent, without events, whenever nothing about the
recipient can change before the frame lands. The common case of a message (recipient online,
presence fresh) therefore costs one policy decision and a few random draws, and no heap
operation at all; events are created only off the happy path.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from array import array
from collections.abc import Callable
from typing import Any

from delivery.routing.policy import Conn as PConn
from delivery.routing.policy import (
    Dispatch,
    Expire,
    MarkPending,
    MessageView,
    PolicyConfig,
    PresenceView,
    Push,
    Trigger,
    Wait,
    decide,
)
from delivery.stats import nearest_rank
from delivery.vocabulary import IN_FLIGHT, State
from presence.config import PresenceConfig
from presence.replica import Out, Replica
from presence.state import Presence
from presence.transport.memory import LinkPolicy, MemoryNetwork, MemoryTransport

from .params import Params
from .registry import Registry

__all__ = ["Simulation", "StrategyStats"]

INF = math.inf

ACCEPTED, DISPATCHED, DELIVERED, PUSHED, PENDING, EXPIRED = (
    State.ACCEPTED, State.DISPATCHED, State.DELIVERED, State.PUSHED, State.PENDING, State.EXPIRED,
)
TOKEN_OK, TOKEN_UNREGISTERED, TOKEN_NONE = 0, 1, 2
PUSH_DEADLINE_S = 10.0  # delivery.routing.router.PUSH_DEADLINE_S
FCM_CALL_S = 0.05  # round trip of one FCM HTTP call (mean)
TASK_S = 0.002  # a Celery task (push, route) from enqueue to start (mean)
LIVE_MARGIN_S = 0.2  # "a live connection would have acked": it stays up at least this long

Event = tuple[float, int, Callable[[Any], None], Any]


class Node:
    """A gateway or worker process: its presence replica and (gateways) its connections."""

    __slots__ = ("by_user", "conns", "crash_at", "gateway", "inc", "name", "rep", "tick_at",
                 "transport", "up")

    def __init__(self, name: str, gateway: bool) -> None:
        self.name = name
        self.gateway = gateway
        self.inc = 0
        self.up = False
        self.rep: Replica | None = None
        self.transport: MemoryTransport | None = None
        self.crash_at = INF
        self.tick_at = INF
        self.by_user: dict[int, SConn] = {}  # the user's newest connection on this gateway
        self.conns: dict[str, SConn] = {}  # every connection the gateway still holds


class SConn:
    """One WebSocket connection. ``close_at``: the client loses it (drawn at open, folded with
    the gateway's next crash); ``detect_at``: the gateway notices and untracks it."""

    __slots__ = ("by_crash", "cid", "close_at", "closed", "detect_at", "end", "gw", "gw_inc",
                 "pconn", "user")

    def __init__(self, cid: str, user: User, gw: Node) -> None:
        self.cid = cid
        self.user = user
        self.gw = gw
        self.gw_inc = gw.inc
        self.pconn = PConn(gw.name, cid)
        self.close_at = INF
        self.detect_at = INF
        self.end = INF
        self.by_crash = False
        self.closed = False


class User:
    __slots__ = ("conn", "epoch", "idx", "key", "last_gw", "next_change", "prev", "token",
                 "unacked")

    def __init__(self, idx: int, token: int) -> None:
        self.idx = idx
        self.key = f"u{idx}"
        self.token = token
        self.conn: SConn | None = None
        self.last_gw: Node | None = None
        self.prev: SConn | None = None  # the user's most recent connection that ended
        self.next_change = INF  # the next scheduled change of this user's connections
        self.epoch = 0
        self.unacked: dict[int, Msg] = {}  # pipeline: stored, not acked (replayed on connect)


class Msg:
    """A message in the pipeline's store (plus what its client has seen)."""

    __slots__ = ("ack_at", "attempts", "dead", "deadline", "expires_at", "idx", "outcome",
                 "push_ok_at", "push_shown_at", "shown_at", "slow", "state", "t0", "token",
                 "user")

    def __init__(self, idx: int, user: User, t0: float, expires_at: float) -> None:
        self.idx = idx
        self.user = user
        self.t0 = t0
        self.state = ACCEPTED
        self.attempts = 0
        self.expires_at = expires_at
        self.deadline = INF
        self.token = 0  # bumped on every state change: stale timers and nacks are ignored
        self.dead: set[str] | None = None  # nacked connections (store.nacked_conns)
        self.shown_at = INF  # first WebSocket display on the client
        self.ack_at = INF  # the ack is recorded in the store (a time, possibly in the future)
        self.push_ok_at = INF  # FCM accepted a push
        self.push_shown_at = INF  # the notification reaches the device
        self.slow = False  # an event refers to it (it cannot be finalized inline)
        self.outcome = ""  # PENDING or EXPIRED once routing gave up on live channels


class StrategyStats:
    __slots__ = ("attempts", "delivered_ws", "dup_sends", "duplicate_frames", "duplicates_shown",
                 "expired", "lat", "lost", "messages", "nacks", "pending", "push_calls",
                 "pushed", "redirects", "replayed_frames", "unnecessary_pushes")

    def __init__(self) -> None:
        self.messages = 0
        self.delivered_ws = 0
        self.pushed = 0
        self.pending = 0
        self.expired = 0
        self.lost = 0
        self.duplicates_shown = 0
        self.unnecessary_pushes = 0
        self.duplicate_frames = 0
        self.attempts = 0
        self.nacks = 0
        self.redirects = 0
        self.replayed_frames = 0
        self.push_calls = 0
        self.dup_sends = 0
        self.lat = array("d")

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.lat)
        n = len(lat)

        def pct(q: float) -> float:
            return round(nearest_rank(lat, q) * 1000.0, 3) if n else 0.0

        msgs = self.messages
        return {
            "messages": msgs,
            "delivered_ws": self.delivered_ws,
            "pushed": self.pushed,
            "pending": self.pending,
            "expired": self.expired,
            "lost": self.lost,
            "lost_pct": round(100.0 * self.lost / msgs, 4) if msgs else 0.0,
            "duplicates_shown": self.duplicates_shown,
            "unnecessary_pushes": self.unnecessary_pushes,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99),
                           "max": round(lat[-1] * 1000.0, 3) if n else 0.0},
            "duplicate_frames_deduped": self.duplicate_frames,
            "dup_sends": self.dup_sends,
            "ws_attempts": self.attempts,
            "nacks": self.nacks,
            "redirects": self.redirects,
            "replayed_frames": self.replayed_frames,
            "push_calls": self.push_calls,
        }


def _count(st: StrategyStats, code: int, latency: float) -> None:
    """Count one fire-and-forget routing (naive or registry): 1 shown, 2 pushed, 0 lost."""
    if code == 1:
        st.delivered_ws += 1
        st.lat.append(latency)
    elif code == 2:
        st.pushed += 1
        st.lat.append(latency)
    else:
        st.lost += 1


def _fold_dup(st: StrategyStats, code1: int, code2: int, latency2: float) -> None:
    """The sender's retry was routed as a second message (no idempotency in the seed)."""
    if code1 == 1 and code2 == 1:
        st.duplicates_shown += 1
    elif code1 == 0 and code2 != 0:  # the retry made it: the message is not lost after all
        st.lost -= 1
        if code2 == 1:
            st.delivered_ws += 1
        else:
            st.pushed += 1
        st.lat.append(latency2)


class Simulation:
    def __init__(self, params: Params, progress: Callable[[int, int], None] | None = None) -> None:
        p = self.p = params
        seed = p.seed
        self.rng = random.Random(f"{seed}/world")
        self.nrng = random.Random(f"{seed}/naive")
        self.prng = random.Random(f"{seed}/pipeline")
        self.rrng = random.Random(f"{seed}/registry")
        self.registry = Registry(p.registry_write_ms / 1000.0, random.Random(f"{seed}/regw"))
        self.rl = p.registry_lookup_ms / 1000.0
        self.progress = progress
        self.now = 0.0
        self._heap: list[Event] = []
        self._seq = itertools.count()
        self.pcfg = PresenceConfig(
            heartbeat_s=p.heartbeat_ms / 1000.0, down_s=p.down_s, purge_s=p.purge_s,
            batch_s=p.batch_ms / 1000.0, log_size=p.log_size,
        )
        self.policy = PolicyConfig(
            ack_timeout_s=p.ack_timeout_s, max_attempts=p.max_attempts,
            retry_backoff_s=p.retry_backoff_s, offline_grace_s=p.offline_grace_s,
            not_synced_wait_s=p.not_synced_wait_s, push_enabled=p.push_enabled,
            reconnect_window_s=p.reconnect_window_s, probe_last_node=p.probe_last_node,
        )
        self.net = MemoryNetwork(rng=random.Random(f"{seed}/net"), virtual=True,
                                 default=self._link_policy())
        self._net_at = INF
        self.nl = p.node_latency_ms / 1000.0
        self.cl = p.client_latency_ms / 1000.0
        self.dbl = p.db_latency_ms / 1000.0
        self.fcml = p.fcm_latency_ms / 1000.0
        self.gateways = [Node(f"gw{i}", True) for i in range(p.gateways)]
        self.workers = [Node(f"wk{i}", False) for i in range(p.workers)]
        self.nodes = self.gateways + self.workers
        self.gateways_up: list[Node] = []
        self.workers_up: list[Node] = []
        self.users: list[User] = []
        for i in range(p.users):
            x = self.rng.random()
            tok = (TOKEN_UNREGISTERED if x < p.fcm_unregistered
                   else TOKEN_NONE if x < p.fcm_unregistered + p.fcm_no_device else TOKEN_OK)
            self.users.append(User(i, tok))
        self.conns: dict[str, SConn] = {}
        self._nconn = 0
        self.naive = StrategyStats()
        self.reg = StrategyStats()
        self.pipe = StrategyStats()
        self.records: list[Msg] = []
        self._naive_dups: dict[int, tuple[int, float]] = {}
        self._reg_dups: dict[int, tuple[int, float]] = {}
        self._backlog: set[tuple[int, User, float]] = set()  # send tasks waiting for a worker
        self._pipe_keys: set[int] = set()  # the store's idempotency keys with a retry pending
        self.generated = 0
        self._next_msg_t = INF
        self.chaos = True
        self.final = False
        self._final_pending: set[int] = set()
        self._stopped = False
        self.world: dict[str, Any] = {
            "connections": 0, "gateway_crashes": 0, "worker_crashes": 0, "partitions": 0,
        }
        self.lost_examples: list[int] = []
        self._progress_every = max(1, p.messages // 100)

    # ------------------------------------------------------------------ event plumbing

    def _at(self, t: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), fn, arg))

    def _sweep_at(self, t: float) -> float:
        s = self.p.sweep_s
        return math.ceil(t / s + 1e-9) * s

    # ------------------------------------------------------------------ presence plumbing

    def _send(self, node: Node, outs: list[Out]) -> None:
        t = node.transport
        if t is None:
            return
        self.net.vnow = self.now  # the network stamps frames with its own virtual clock
        for o in outs:
            if o.to is None:
                t.broadcast(o.frame)
            else:
                t.send(o.to, o.frame)
        self._net_wake()

    def _net_wake(self) -> None:
        nd = self.net.next_due()
        if nd is not None and nd < self._net_at:
            self._net_at = nd
            self._at(nd, self._net_event)

    def _net_event(self, _: Any) -> None:
        if self.now != self._net_at:
            return  # superseded by an earlier wake-up that already delivered
        self._net_at = INF
        self.net.deliver_due(self.now)
        self._net_wake()

    def _resched(self, node: Node) -> None:
        rep = node.rep
        if rep is None:
            return
        d = rep.next_deadline()
        if d < node.tick_at:
            t = d if d > self.now else self.now
            node.tick_at = t
            self._at(t, self._tick, (node, node.inc))

    def _tick(self, arg: tuple[Node, int]) -> None:
        node, inc = arg
        if node.inc != inc or node.rep is None or self.now != node.tick_at:
            return
        node.tick_at = INF
        outs = node.rep.tick(self.now)
        if outs:
            self._send(node, outs)
        self._resched(node)

    def _handler(self, node: Node, inc: int) -> Callable[[bytes], None]:
        def on_frame(frame: bytes) -> None:
            rep = node.rep
            if node.inc != inc or rep is None:
                return
            outs = rep.receive(frame, self.now)
            if outs:
                self._send(node, outs)
            self._resched(node)

        return on_frame

    def _link_policy(self) -> LinkPolicy:
        p = self.p
        d = p.repl_delay_ms / 1000.0
        delay = d * (1.0 - p.repl_jitter + 2.0 * p.repl_jitter * self.rng.random())
        return LinkPolicy(delay=delay, jitter=p.repl_frame_jitter_ms / 1000.0, loss=p.repl_loss)

    def _relink(self, _: Any) -> None:
        """Every directed link gets a new latency (drawn from the configured distribution)."""
        names = [n.name for n in self.nodes]
        for a in names:
            for b in names:
                if a != b:
                    self.net.set_link(a, b, self._link_policy(), both=False)
        if self.p.link_change_s > 0 and not self.final:
            self._at(self.now + self.p.link_change_s, self._relink)

    # ------------------------------------------------------------------ nodes

    def _start_node(self, node: Node) -> None:
        p = self.p
        node.inc += 1
        node.up = True
        node.rep = Replica(node.name, node.inc, self.pcfg, now=self.now,
                           rng=random.Random(f"{p.seed}/rep/{node.name}/{node.inc}"))
        t = self.net.transport(node.name)
        t.start(self._handler(node, node.inc))
        node.transport = t
        node.tick_at = INF
        self._resched(node)
        mean = p.gateway_crash_s if node.gateway else p.worker_crash_s
        if mean > 0 and self.chaos:
            node.crash_at = self.now + self.rng.expovariate(1.0 / mean)
            self._at(node.crash_at, self._crash, (node, node.inc))
        else:
            node.crash_at = INF
        self._refresh_up()

    def _refresh_up(self) -> None:
        self.gateways_up = [g for g in self.gateways if g.up]
        self.workers_up = [w for w in self.workers if w.up]

    def _crash(self, arg: tuple[Node, int]) -> None:
        node, inc = arg
        if node.inc != inc or not node.up or node.crash_at != self.now:
            return
        node.up = False
        if node.transport is not None:
            node.transport.close()
        node.transport = None
        node.rep = None
        node.tick_at = INF
        if node.gateway:
            self.world["gateway_crashes"] += 1
            lease_end = self.now + self.p.down_s
            for sc in list(node.conns.values()):
                if not sc.closed:
                    self._client_lost(sc)
                self.registry.ended(sc.user.idx, sc, lease_end)
            node.conns.clear()
            node.by_user.clear()
        else:
            self.world["worker_crashes"] += 1
        self._refresh_up()
        self._at(self.now + self.rng.expovariate(1.0 / self.p.downtime_s), self._restart, node)

    def _restart(self, node: Node) -> None:
        self._start_node(node)

    def _partition(self, _: Any) -> None:
        p = self.p
        if not self.chaos:
            return
        names = [n.name for n in self.nodes if n.up]
        if len(names) >= 2:
            k = 1 + self.rng.randrange(len(names) - 1)
            side_a = self.rng.sample(names, k)
            side_b = [n for n in names if n not in side_a]
            self.net.partition(side_a, side_b)
            self.world["partitions"] += 1
        self._at(self.now + self.rng.expovariate(1.0 / p.partition_s), self._heal)

    def _heal(self, _: Any) -> None:
        self.net.heal()
        if self.chaos and self.p.partition_every_s > 0:
            self._at(self.now + self.rng.expovariate(1.0 / self.p.partition_every_s),
                     self._partition)

    # ------------------------------------------------------------------ users

    def _connect(self, u: User) -> None:
        gws = self.gateways_up
        if not gws:
            self._at(self.now + 1.0, self._reconnect, (u, u.epoch))
            return
        last = u.last_gw
        rng = self.rng
        if last is not None and last.up and (self.p.same_node >= 1.0
                                             or rng.random() < self.p.same_node):
            gw = last
        else:
            others = [g for g in gws if g is not last] or gws
            gw = others[rng.randrange(len(others))]
        session = INF if self.final else rng.expovariate(1.0 / self.p.session_s)
        self._open(u, gw, session)

    def _open(self, u: User, gw: Node, session: float) -> None:
        now = self.now
        cid = f"c{self._nconn}"
        self._nconn += 1
        self.world["connections"] += 1
        sc = SConn(cid, u, gw)
        sc.end = end = now + session
        if gw.crash_at <= end:
            sc.by_crash = True
            sc.close_at = sc.detect_at = gw.crash_at
        else:
            sc.close_at = end
            if self.p.half_open and self.rng.random() < self.p.half_open:
                sc.detect_at = end + self.p.detect_s
            else:
                sc.detect_at = end
            if end < INF:
                self._at(end, self._close, sc)
        self.conns[cid] = sc
        gw.conns[cid] = sc
        gw.by_user[u.idx] = sc
        u.conn = sc
        u.last_gw = gw
        u.next_change = sc.close_at
        if self.final:
            self._final_pending.discard(u.idx)
        assert gw.rep is not None
        gw.rep.track(u.key, cid)
        self._resched(gw)
        self.registry.connected(u.idx, sc, now)
        if u.unacked:
            self._replay(u, sc)

    def _close(self, sc: SConn) -> None:
        if sc.closed or sc.close_at != self.now:
            return
        self._client_lost(sc)
        if sc.detect_at <= self.now:
            self._detect(sc)
        else:
            self._at(sc.detect_at, self._detect, sc)

    def _client_lost(self, sc: SConn) -> None:
        sc.closed = True
        u = sc.user
        u.prev = sc
        if u.conn is sc:
            u.conn = None
            t = self.now + self.rng.expovariate(1.0 / self.p.gap_s)
            u.next_change = t
            self._at(t, self._reconnect, (u, u.epoch))

    def _detect(self, sc: SConn) -> None:
        gw = sc.gw
        if gw.inc != sc.gw_inc or gw.rep is None:
            return
        gw.conns.pop(sc.cid, None)
        u = sc.user
        if gw.by_user.get(u.idx) is sc:
            del gw.by_user[u.idx]
        gw.rep.untrack(u.key, sc.cid)
        self._resched(gw)
        self.registry.ended(u.idx, sc, self.now)

    def _reconnect(self, arg: tuple[User, int]) -> None:
        u, epoch = arg
        if u.epoch != epoch or u.conn is not None:
            return
        self._connect(u)

    # ------------------------------------------------------------------ traffic

    def _message(self) -> None:
        """The next message of the traffic (the hot path: keep it lean)."""
        idx = self.generated
        self.generated = idx + 1
        rng = self.rng
        now = self.now
        users = self.users
        p = self.p
        if p.group_size > 1:
            self._group_message(idx, now)
        else:
            self._direct_message(idx, users[int(rng.random() * len(users))], now)
        if self.progress is not None and self.generated % self._progress_every == 0:
            self.progress(self.generated, p.messages)
        if self.generated >= p.messages:
            self._next_msg_t = INF
            self._at(now, self._end_traffic)
        else:
            self._next_msg_t = now + rng.expovariate(p.rate)

    def _group_message(self, idx: int, now: float) -> None:
        """A group message: one route per recipient, all on one worker (one send task),
        each recipient's delivery counted on its own."""
        g = self.p.group_size
        for k, u in enumerate(self.rng.sample(self.users, g)):
            self.naive.messages += 1
            self.reg.messages += 1
            self.pipe.messages += 1
            self._route_new((idx * g + k, u, now))

    def _direct_message(self, idx: int, u: User, now: float) -> None:
        rng = self.rng
        p = self.p
        if p.dup_send and rng.random() < p.dup_send:
            self._at(now + 0.5 + 4.5 * rng.random(), self._dup_send, (idx, u, now))
            self._pipe_keys.add(idx)
            self._naive_dups[idx] = (-1, INF)
            self._reg_dups[idx] = (-1, INF)
        self.naive.messages += 1
        self.reg.messages += 1
        self.pipe.messages += 1
        self._route_new((idx, u, now))

    def _route_new(self, arg: tuple[int, User, float]) -> None:
        idx, u, t0 = arg
        wks = self.workers_up
        if not wks:  # the broker keeps the task until a worker is back
            self._backlog.add(arg)
            self._at(self.now + 0.5, self._route_new, arg)
            return
        if self._backlog:
            self._backlog.discard(arg)
        wk = wks[(idx // self.p.group_size) % len(wks)]  # a group message: one worker
        rep = wk.rep
        assert rep is not None
        ps = rep.list(u.key)
        code, t = self._naive_route(u, t0, ps)
        if idx in self._naive_dups:
            self._naive_dups[idx] = (code, t)
        _count(self.naive, code, t - t0)
        code, t = self._registry_route(u, t0)
        if idx in self._reg_dups:
            self._reg_dups[idx] = (code, t)
        _count(self.reg, code, t - t0)
        self._pipe_new(idx, u, t0, wk, ps)

    def _dup_send(self, arg: tuple[int, User, float]) -> None:
        """The sender's app sends the same message again (same client message id)."""
        idx, u, t0 = arg
        # pipeline: the store is idempotent on (sender, client message id): stored once.
        if idx in self._pipe_keys:
            self._pipe_keys.discard(idx)
            self.pipe.dup_sends += 1
        # naive and registry: a second, independent message.
        self.naive.dup_sends += 1
        self.reg.dup_sends += 1
        wks = self.workers_up
        if not wks:
            return
        wk = wks[(idx + 1) % len(wks)]
        assert wk.rep is not None
        code2, t2 = self._naive_route(u, self.now, wk.rep.list(u.key))
        _fold_dup(self.naive, self._naive_dups.pop(idx, (0, INF))[0], code2, t2 - t0)
        code2, t2 = self._registry_route(u, self.now)
        _fold_dup(self.reg, self._reg_dups.pop(idx, (0, INF))[0], code2, t2 - t0)

    # ------------------------------------------------------------------ naive strategy

    def _naive_route(self, u: User, t0: float, ps: list[Presence]) -> tuple[int, float]:
        """The seed's code: presence says where the user is; send there and assume delivered.

        Returns (0 lost | 1 shown | 2 pushed, display time)."""
        r = self.nrng
        now = self.now
        if ps:
            return self._write_and_assume(self.conns[ps[-1].conn], now, r)
        return self._fire_and_forget_push(u, now, r, self.naive)

    def _write_and_assume(self, sc: SConn, t: float, r: random.Random) -> tuple[int, float]:
        """The seed's write: a frame to ``sc`` leaves at ``t`` and is assumed delivered. Shown
        only if the connection is still there when it arrives (1, display time); else lost."""
        if self.p.frame_loss and r.random() < self.p.frame_loss:
            return 0, INF
        t_arr = t + self.nl * (0.5 + r.random())
        gw = sc.gw
        if gw.inc != sc.gw_inc or not gw.up or gw.crash_at <= t_arr:
            return 0, INF
        tr = t_arr + self.cl * (0.5 + r.random())
        if sc.close_at > tr:
            return 1, tr
        return 0, INF

    def _fire_and_forget_push(self, u: User, now: float, r: random.Random,
                              st: StrategyStats) -> tuple[int, float]:
        """The seed's push: one FCM call, no retry; a failure loses the message."""
        if u.token != TOKEN_OK:
            return 0, INF
        st.push_calls += 1
        if self.p.fcm_transient and r.random() < self.p.fcm_transient:
            return 0, INF
        c = u.conn
        if c is not None and c.close_at > now + LIVE_MARGIN_S and c.gw.up:
            st.unnecessary_pushes += 1
        return 2, now + TASK_S + self.fcml * (0.5 + r.random())

    # ------------------------------------------------------------------ registry strategy

    def _registry_route(self, u: User, t0: float) -> tuple[int, float]:
        """The seed's code with a strongly consistent registry instead of presence: look the
        user up (a round trip), send where it says and assume delivered.

        Returns (0 lost | 1 shown | 2 pushed, display time)."""
        r = self.rrng
        now = self.now
        self.registry.lookups += 1
        sc = self.registry.at(u.idx, now)
        t = now + self.rl * (0.5 + r.random())  # the answer is back: the frame leaves now
        if sc is None:
            return self._fire_and_forget_push(u, t, r, self.reg)
        assert isinstance(sc, SConn)
        # Lost when the connection died between the lookup and the write.
        return self._write_and_assume(sc, t, r)

    # ------------------------------------------------------------------ pipeline strategy

    def _pipe_new(self, idx: int, u: User, t0: float, wk: Node, ps: list[Presence]) -> None:
        m = Msg(idx, u, t0, self.now + self.p.ttl_s)  # the TTL runs from acceptance
        self._route(m, Trigger.NEW, wk, ps)
        if not m.slow and m.ack_at < INF:
            # finished inline: acked over the WebSocket before anything could interleave
            st = self.pipe
            st.delivered_ws += 1
            st.lat.append(m.shown_at - t0)
            return
        self.records.append(m)
        u.unacked[idx] = m

    def _settle(self, m: Msg) -> bool:
        """Apply an ack that has reached the store by now. True if the message is settled."""
        if m.ack_at <= self.now:
            m.state = DELIVERED
            return True
        return m.state not in IN_FLIGHT

    def _route(
        self, m: Msg, trigger: Trigger, wk: Node | None = None, ps: list[Presence] | None = None
    ) -> None:
        now = self.now
        if m.ack_at <= now:
            m.state = DELIVERED
        if wk is None or ps is None:
            wks = self.workers_up
            if not wks:
                m.slow = True
                self._at(now + self.p.sweep_s, self._retry_route, (m, m.token, trigger))
                return
            wk = wks[m.idx % len(wks)]
            assert wk.rep is not None
            ps = wk.rep.list(m.user.key)
        rep = wk.rep
        assert rep is not None
        conns = self.conns
        prev = m.user.prev
        view = PresenceView(rep.synced, [conns[x.conn].pconn for x in ps],
                            prev.pconn if prev is not None else None)
        d = decide(MessageView(m.state, m.attempts, m.expires_at, m.t0), view, trigger, now,
                   self.policy, m.dead or ())
        tp = type(d)
        if tp is Dispatch:
            assert isinstance(d, Dispatch)
            self._dispatch(m, d)
        elif tp is Wait:
            assert isinstance(d, Wait)
            m.token += 1
            m.deadline = d.until + self.p.ack_timeout_s  # the sweep's safety net
            m.slow = True
            self._at(d.until, self._recheck, (m, m.token, wk, wk.inc))
        elif tp is Push:
            m.attempts += 1
            m.state = DISPATCHED
            m.token += 1
            m.deadline = now + PUSH_DEADLINE_S
            m.slow = True
            self._at(now + TASK_S * (0.5 + self.prng.random()), self._push, (m, m.token, 0))
        elif tp is MarkPending:
            m.state = m.outcome = PENDING
            m.token += 1
            m.deadline = INF
        elif tp is Expire:
            m.state = m.outcome = EXPIRED
            m.token += 1
            m.deadline = INF

    def _retry_route(self, arg: tuple[Msg, int, Trigger]) -> None:
        m, tok, trigger = arg
        if tok == m.token and not self._settle(m):
            self._route(m, trigger)

    def _dispatch(self, m: Msg, d: Dispatch) -> None:
        p = self.p
        r = self.prng
        now = self.now
        m.attempts += 1
        m.state = DISPATCHED
        m.token += 1
        tok = m.token
        m.deadline = d.ack_deadline
        st = self.pipe
        st.attempts += 1
        u = m.user
        targets = d.targets
        if len(targets) == 1 and not p.frame_loss:
            # Fast path: the one target is the user's live connection. Draw the four hops
            # (deliver, show, ack, record); if the connection outlives them all, nothing can
            # interleave and the attempt is complete without a single event.
            sc = self.conns[targets[0].conn]
            if sc is u.conn and sc.gw.up and sc.gw_inc == sc.gw.inc:
                rnd = r.random
                nl = self.nl
                cl = self.cl
                tr = now + nl * (0.5 + rnd()) + cl * (0.5 + rnd())
                tdb = tr + cl * (0.5 + rnd()) + nl * (0.5 + rnd())
                if tdb < sc.close_at and tdb < m.deadline:
                    if tr < m.shown_at:
                        if m.shown_at < INF:
                            st.duplicate_frames += 1
                        m.shown_at = tr
                    else:
                        st.duplicate_frames += 1
                    if tdb < m.ack_at:
                        m.ack_at = tdb
                    return
        unreachable: list[str] = []
        for c in targets:
            sc = self.conns[c.conn]
            gw = sc.gw
            if not gw.up:
                # nobody subscribes to that node's channel: PUBLISH returns 0
                unreachable.append(c.conn)
                continue
            if p.frame_loss and r.random() < p.frame_loss:
                continue
            t_arr = now + self.nl * (0.5 + r.random())
            if gw.crash_at <= t_arr:
                continue  # the gateway dies with the frame in flight
            if u.next_change > t_arr:
                self._gw_frame(m, tok, sc, t_arr)  # nothing can interleave: compute it now
            else:
                m.slow = True
                self._at(t_arr, self._gw_event, (m, tok, sc))
        if unreachable and len(unreachable) == len(targets):
            if m.dead is None:
                m.dead = set()
            m.dead.update(unreachable)
            st.nacks += 1
            self._route(m, Trigger.NACK)
            return
        if m.ack_at > m.deadline:
            m.slow = True
            self._at(self._sweep_at(m.deadline), self._sweep, (m, tok))

    def _gw_event(self, arg: tuple[Msg, int, SConn]) -> None:
        m, tok, sc = arg
        if m.ack_at <= self.now or not sc.gw.up:
            return
        self._gw_frame(m, tok, sc, self.now)

    def _gw_frame(self, m: Msg, tok: int, sc: SConn, t: float) -> None:
        """A deliver frame for ``sc`` reaches its gateway (which is up) at ``t``."""
        gw = sc.gw
        if gw.inc == sc.gw_inc and t < sc.detect_at:  # the gateway holds the connection
            self._write(m, sc, t, tok)
            return
        st = self.pipe
        other = gw.by_user.get(m.user.idx)
        if other is not None and other is not sc and other.gw_inc == gw.inc and t < other.detect_at:
            st.redirects += 1
            self._write(m, other, t, tok)
            return
        st.nacks += 1
        r = self.prng
        if self.p.frame_loss and r.random() < self.p.frame_loss:
            return
        m.slow = True
        self._at(t + self.nl * (0.5 + r.random()), self._nack, (m, tok, sc.cid))

    def _write(self, m: Msg, sc: SConn, t: float, tok: int | None) -> None:
        """The gateway writes a frame to ``sc`` at ``t``; the client shows it and acks."""
        r = self.prng
        tr = t + self.cl * (0.5 + r.random())
        if sc.close_at > tr:
            if tr < m.shown_at:
                if m.shown_at < INF:
                    self.pipe.duplicate_frames += 1
                m.shown_at = tr
            else:
                self.pipe.duplicate_frames += 1
            ta = tr + self.cl * (0.5 + r.random())
            if sc.close_at > ta:
                tdb = ta + self.nl * (0.5 + r.random())
                if tdb < m.ack_at:
                    m.ack_at = tdb
                return
        if tok is not None and sc.detect_at < sc.gw.crash_at:
            # unacked when the connection ends: the gateway answers for the frame then
            m.slow = True
            self._at(max(sc.detect_at, t), self._gw_event, (m, tok, sc))

    def _nack(self, arg: tuple[Msg, int, str]) -> None:
        m, tok, cid = arg
        if m.dead is None:
            m.dead = set()
        m.dead.add(cid)
        if tok != m.token or self._settle(m):
            return  # a nack for an attempt that is no longer current changes nothing
        self._route(m, Trigger.NACK)

    def _recheck(self, arg: tuple[Msg, int, Node, int]) -> None:
        m, tok, wk, inc = arg
        if tok != m.token or self._settle(m):
            return
        if wk.inc != inc or not wk.up:
            # the countdown task died with its worker: the sweep finds the message later
            self._at(self._sweep_at(m.deadline), self._sweep, (m, tok))
            return
        assert wk.rep is not None
        self._route(m, Trigger.RECHECK, wk, wk.rep.list(m.user.key))

    def _sweep(self, arg: tuple[Msg, int]) -> None:
        m, tok = arg
        if tok != m.token or self._settle(m):
            return
        if m.deadline > self.now:
            self._at(self._sweep_at(m.deadline), self._sweep, arg)
            return
        self._route(m, Trigger.DEADLINE)

    def _push(self, arg: tuple[Msg, int, int]) -> None:
        """The ``delivery.push`` task for the attempt ``tok`` (run ``n`` of it)."""
        m, tok, n = arg
        if tok != m.token or self._settle(m) or m.state != DISPATCHED:
            return
        p = self.p
        r = self.prng
        u = m.user
        now = self.now
        st = self.pipe
        m.token += 1
        if u.token == TOKEN_NONE:
            m.state = m.outcome = PENDING
            m.deadline = INF
            return
        st.push_calls += 1
        if u.token == TOKEN_UNREGISTERED:
            m.state = m.outcome = PENDING
            m.deadline = INF
            return
        if p.fcm_transient and r.random() < p.fcm_transient:
            if n < p.push_max_retries:
                countdown = p.retry_backoff_s * (2 ** n) * (0.5 + 0.5 * r.random())
                m.deadline = now + countdown + PUSH_DEADLINE_S
                self._at(now + FCM_CALL_S + countdown, self._push, (m, m.token, n + 1))
            else:
                m.state = m.outcome = PENDING
                m.deadline = INF
            return
        m.state = PUSHED
        m.deadline = INF
        m.push_ok_at = now + FCM_CALL_S
        m.push_shown_at = now + self.fcml * (0.5 + r.random())
        c = u.conn
        if c is not None and c.close_at > now + LIVE_MARGIN_S and c.gw.up:
            st.unnecessary_pushes += 1

    def _replay(self, u: User, sc: SConn) -> None:
        """After welcome the gateway replays every unacked message of the user, oldest first."""
        now = self.now
        t = now + self.dbl * (0.5 + self.prng.random())
        if t >= sc.detect_at or sc.gw.crash_at <= t:
            return
        done: list[int] = []
        st = self.pipe
        for idx, m in u.unacked.items():
            if m.ack_at <= now:
                m.state = DELIVERED
                done.append(idx)
                continue
            st.replayed_frames += 1
            self._write(m, sc, t, None)
            t += 1e-5
        for idx in done:
            del u.unacked[idx]

    # ------------------------------------------------------------------ phases

    def _end_traffic(self, _: Any) -> None:
        """No new messages: chaos stops (nothing new is drawn), routing drains."""
        self.chaos = False
        horizon = self.now + 1.0
        for node in self.nodes:
            if node.up and node.crash_at > horizon and node.crash_at < INF:
                node.crash_at = INF  # cancelled: connections folded with it get their own end
                for sc in node.conns.values():
                    if sc.by_crash and not sc.closed:
                        sc.by_crash = False
                        sc.close_at = sc.detect_at = sc.end
                        sc.user.next_change = sc.end
                        if sc.end < INF:
                            self._at(sc.end, self._close, sc)
        self._at(self.now + self.p.drain_s, self._snapshot)

    def _snapshot(self, _: Any) -> None:
        """Record each message's outcome, then the final phase: every user reconnects once."""
        if self._backlog or not all(n.up for n in self.nodes):
            # send tasks still wait in the broker, or a node is still down: not final yet
            self._at(self.now + 1.0, self._snapshot)
            return
        self.net.heal()
        self.snapshot_t = now = self.now
        st = self.pipe
        for m in self.records:
            # how the message got (or will get) to the user: over a WebSocket, by push, or
            # only by replay from the store (pending: no channel; expired: TTL passed first)
            if m.push_ok_at <= now and m.push_ok_at <= m.ack_at:
                st.pushed += 1
            elif m.outcome == EXPIRED:
                st.expired += 1
            elif m.outcome == PENDING or m.ack_at > now:
                st.pending += 1
            else:
                st.delivered_ws += 1
            first = min(m.shown_at, m.push_shown_at)
            if first <= now:
                st.lat.append(first - m.t0)
        self.final = True
        n = len(self.users)
        self._final_pending = {u.idx for u in self.users}
        for i, u in enumerate(self.users):
            u.epoch += 1
            self._at(now + 1.0 + i / n, self._final_reconnect, u)
        self._at(now + 2.0 + self.p.drain_s, self._stop)

    def _final_reconnect(self, u: User) -> None:
        sc = u.conn
        if sc is not None and not sc.closed:
            sc.closed = True
            sc.close_at = sc.detect_at = self.now
            u.conn = None
            self._detect(sc)
        self._connect(u)

    def _stop(self, _: Any) -> None:
        if self._final_pending:
            self._at(self.now + 1.0, self._stop)  # someone has not reconnected yet
            return
        self._stopped = True
        st = self.pipe
        for m in self.records:
            if m.shown_at == INF and m.push_ok_at == INF:
                st.lost += 1
                if len(self.lost_examples) < 20:
                    self.lost_examples.append(m.idx)

    # ------------------------------------------------------------------ run

    def run(self) -> dict[str, Any]:
        p = self.p
        self._relink(None)
        for node in self.nodes:
            self._start_node(node)
        for u in self.users:
            self._at(self.rng.random(), self._reconnect, (u, u.epoch))
        if p.partition_every_s > 0:
            self._at(p.warmup_s + self.rng.expovariate(1.0 / p.partition_every_s),
                     self._partition)
        self.now = p.warmup_s
        if p.messages > 0:
            self._next_msg_t = p.warmup_s
        else:
            self._at(p.warmup_s, self._end_traffic)
        self.now = 0.0
        heap = self._heap
        pop = heapq.heappop
        message = self._message
        while not self._stopped and heap:
            tm = self._next_msg_t
            if tm <= heap[0][0]:
                self.now = tm
                message()
                continue
            t, _, fn, arg = pop(heap)
            self.now = t
            fn(arg)
        return self.result()

    def result(self) -> dict[str, Any]:
        return {
            "scenario": self.p.scenario,
            "seed": self.p.seed,
            "params": self.p.to_dict(),
            "strategies": {
                "naive": self.naive.as_dict(),
                "registry": {**self.reg.as_dict(), "registry_lookups": self.registry.lookups,
                             "registry_writes": self.registry.writes},
                "pipeline": self.pipe.as_dict(),
            },
        }

    def world_stats(self) -> dict[str, Any]:
        return {
            **self.world,
            "virtual_s": round(self.now, 3),
            "presence_frames_sent": self.net.sent,
            "presence_frames_delivered": self.net.delivered,
            "presence_frames_lost": self.net.lost,
            "pipeline_slow_path_messages": len(self.records),
            "pipeline_lost_examples": list(self.lost_examples),
        }
