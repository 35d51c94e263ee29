"""Sans-IO presence replica.

A :class:`Replica` wraps a :class:`~presence.state.State` with everything that
involves other replicas and time, without doing any I/O or reading any clock:

* :meth:`Replica.receive` is fed a raw frame and the current time,
* :meth:`Replica.tick` is fed the current time (call it at
  :meth:`Replica.next_deadline` at the latest, and after local operations),

and both return the :class:`Out` frames to send (``to=None``: broadcast on the
shared channel; otherwise the *name* of the replica whose direct channel gets it).
"""

from __future__ import annotations

import builtins
import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

from . import wire
from .config import PresenceConfig
from .state import DeltaPart, MergeResult, Part, Presence, Rid, SlicePart, State

__all__ = ["Out", "Peer", "Replica"]

DiffCallback = Callable[[list[Presence], list[Presence]], None]


class Out(NamedTuple):
    to: str | None
    frame: bytes


@dataclass(slots=True)
class Peer:
    rid: Rid
    last_seen: float
    status: str = "up"  # "up" | "down"
    direct: bool = False  # heard from itself (not only through others' state)
    clock: dict[Rid, int] = field(default_factory=dict)


class Replica:
    def __init__(
        self,
        name: str,
        incarnation: int,
        config: PresenceConfig | None = None,
        *,
        now: float = 0.0,
        rng: random.Random | None = None,
        on_diff: DiffCallback | None = None,
    ) -> None:
        if not name or ":" in name:
            raise ValueError(f"name: must be non-empty and contain no ':' (got {name!r})")
        self.config = config or PresenceConfig()
        self.rid: Rid = (name, int(incarnation))
        self.name = name
        self.state = State(self.rid, log_size=self.config.log_size)
        self.on_diff = on_diff
        self._rng = rng or random.Random()
        self._started = now
        self._now = now
        self._peers: dict[Rid, Peer] = {}
        self._next_hb = now  # announce ourselves at once
        self._flush_at: float | None = None
        self._last_flush = float("-inf")
        self._want: dict[Rid, tuple[int, Rid]] = {}
        self._outstanding: dict[Rid, tuple[int, float]] = {}
        self._req_seq = 0
        self._baseline: dict[Rid, dict[Rid, int]] = {}
        self._satisfied: set[Rid] = set()
        self._synced = False
        self._chunks: dict[tuple[Rid, int], dict[int, builtins.list[Part]]] = {}
        self._chunk_deadline: dict[tuple[Rid, int], float] = {}
        self._stopped = False
        self._left: set[Rid] = set()
        self.dropped: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------ local ops

    def track(self, key: str, conn: str, meta: Mapping[str, Any] | None = None) -> Presence:
        old = self.state.get(key, conn)
        p = self.state.track(key, conn, meta)
        if p != old:
            self._emit([p], [old] if old is not None else [])
        return p

    def update(self, key: str, conn: str, meta: Mapping[str, Any] | None) -> Presence | None:
        old = self.state.get(key, conn)
        if old is None:
            return None
        return self.track(key, conn, meta)

    def untrack(self, key: str, conn: str) -> bool:
        old = self.state.untrack(key, conn)
        if old is not None:
            self._emit([], [old])
        return old is not None

    def untrack_conn(self, conn: str) -> int:
        gone = self.state.untrack_conn(conn)
        if gone:
            self._emit([], gone)
        return len(gone)

    def list(self, key: str) -> builtins.list[Presence]:
        return self.state.list(key)

    # -------------------------------------------------------------- status

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def peers(self) -> dict[Rid, Peer]:
        return self._peers

    def stats(self) -> dict[str, Any]:
        up = sorted(f"{r[0]}:{r[1]}" for r, p in self._peers.items() if p.status == "up")
        down = sorted(f"{r[0]}:{r[1]}" for r, p in self._peers.items() if p.status == "down")
        return {
            "name": self.name,
            "incarnation": self.rid[1],
            "entries": len(self.state),
            "replicas_up": up,
            "replicas_down": down,
            "synced": self._synced,
            "dropped": dict(self.dropped),
            "dropped_total": sum(self.dropped.values()),
            "outstanding_transfers": len(self._outstanding),
            **{k: v for k, v in self.counters.items()},
        }

    def next_deadline(self) -> float:
        """The latest time at which :meth:`tick` must be called again."""
        t = self._next_hb
        if self.state.has_delta():
            t = min(t, self._flush_at if self._flush_at is not None else self._now)
        for _, deadline in self._outstanding.values():
            t = min(t, deadline)
        if not self._synced:
            wait_end = self._started + self.config.sync_wait
            if wait_end > self._now:
                t = min(t, wait_end)
        return t

    # ------------------------------------------------------------- helpers

    def _emit(self, joins: builtins.list[Presence], leaves: builtins.list[Presence]) -> None:
        if (joins or leaves) and self.on_diff is not None:
            self.on_diff(joins, leaves)

    def _apply(self, res: MergeResult, now: float) -> None:
        for old in res.superseded:
            self._forget_peer(old)
        for origin in res.new_origins:
            if origin not in self._peers:
                self._peers[origin] = Peer(origin, now)
        self._emit(res.joins, res.leaves)

    def _forget_peer(self, rid: Rid) -> None:
        self._peers.pop(rid, None)
        self._baseline.pop(rid, None)
        self._satisfied.discard(rid)
        self._outstanding.pop(rid, None)
        for o, (_, p) in list(self._want.items()):
            if p == rid or o == rid:
                del self._want[o]

    def _heard(self, sender: Rid, now: float) -> None:
        res = self.state.see(sender)
        self._apply(res, now)
        peer = self._peers.get(sender)
        if peer is None:
            peer = self._peers[sender] = Peer(sender, now)
        if not peer.direct:
            peer.direct = True
            # a replica we never heard directly: tell it about us soon
            self._next_hb = min(self._next_hb, now + self.config.batch_s)
            self.counters["replicas_seen"] += 1
        peer.last_seen = now
        if peer.status == "down":
            peer.status = "up"
            self.counters["replica_ups"] += 1
            self._apply(self.state.replica_up(sender), now)

    def _note_clock(self, sender: Rid, clock: Mapping[Rid, int], now: float) -> None:
        peer = self._peers.get(sender)
        if peer is None:
            return
        if sender not in self._baseline:
            self._baseline[sender] = dict(clock)
        elif clock == peer.clock:
            # the usual heartbeat: nothing new since the last one. Only origins we
            # still lag on matter (a want dropped after a failed transfer is re-learned).
            for origin in self.state.behind(clock):
                if origin != self.rid and not self.state.is_purged(origin):
                    cur = self._want.get(origin)
                    if cur is None or clock[origin] > cur[0]:
                        self._want[origin] = (clock[origin], sender)
            return
        peer.clock = dict(clock)
        for origin, n in clock.items():
            if origin == self.rid or self.state.is_purged(origin):
                continue
            if origin not in self._peers:
                self._apply(self.state.see(origin), now)
                if self.state.is_purged(origin):
                    continue
            if n > self.state.counter(origin):
                cur = self._want.get(origin)
                if cur is None or n > cur[0]:
                    self._want[origin] = (n, sender)

    # ------------------------------------------------------------- receive

    def _decode(self, frame: bytes, now: float) -> wire.Message | None:
        """The frame to handle: None when stopped, undecodable (counted) or our own echo."""
        self._now = max(self._now, now)
        if self._stopped:
            return None
        try:
            msg = wire.decode(frame, self.config.max_frame_bytes)
        except wire.WireError as exc:
            self.dropped[exc.kind] += 1
            return None
        return None if msg.sender == self.rid else msg  # our own broadcast echoed back

    def receive(self, frame: bytes, now: float) -> builtins.list[Out]:
        """Handle one incoming frame; never raises because of its content."""
        msg = self._decode(frame, now)
        if msg is None:
            return []
        sender = msg.sender
        if sender[0] == self.name:
            self.dropped["same_name"] += 1
            return []
        if msg.to is not None and msg.to != self.rid:
            self.dropped["misdirected"] += 1
            return []
        if self.state.is_purged(sender):
            # Only the replica itself, heard directly after a partition outlasting
            # the purge period, may come back; relayed state about it never does.
            if not (
                msg.type == wire.HB and sender not in self._left and self.state.unpurge(sender)
            ):
                self.dropped["purged_sender"] += 1
                return []
            self.counters["replica_returns"] += 1
        self.counters["frames_in"] += 1
        try:
            return self._handle(msg, now)
        except Exception:  # pragma: no cover - defensive: a bug must not kill the replica
            self.dropped["error"] += 1
            return []

    def _handle(self, msg: wire.Message, now: float) -> builtins.list[Out]:
        sender = msg.sender
        if msg.type == wire.LEAVE:
            if sender in self._peers or sender in self.state.clock():
                self.counters["graceful_leaves"] += 1
                self._left.add(sender)
                self._apply(self.state.purge(sender), now)
                self._forget_peer(sender)
            return []
        self._heard(sender, now)
        if self.state.is_purged(sender):  # superseded while being heard
            return []
        if msg.type == wire.HB:
            self._note_clock(sender, msg.clock, now)
        elif msg.type == wire.DELTA:
            res = self.state.merge(msg.parts, diffs=self.on_diff is not None)
            self._apply(res, now)
            for g in res.gaps:
                self.counters["gaps"] += 1
                cur = self._want.get(g.origin)
                if cur is None or g.end > cur[0]:
                    self._want[g.origin] = (g.end, sender)
                peer = self._peers.get(sender)
                if peer is not None and peer.clock.get(g.origin, 0) < g.end:
                    peer.clock[g.origin] = g.end
        elif msg.type == wire.REQ:
            self._note_clock(sender, msg.clock, now)
            parts = self.state.extract(msg.clock, exclude=sender)
            self.counters["transfers_served"] += 1
            return [Out(sender[0], f) for f in self._ack_frames(sender, msg.req_id, parts)]
        elif msg.type == wire.ACK:
            key = (sender, msg.req_id)
            if msg.total > 1:
                got = self._chunks.setdefault(key, {})
                got[msg.seq] = msg.parts
                self._chunk_deadline[key] = now + self.config.transfer_timeout
                if len(got) < msg.total:
                    return []
                del self._chunks[key]
                del self._chunk_deadline[key]
                parts = _join_chunks([got[i] for i in range(msg.total) if i in got])
            else:
                parts = msg.parts
            res = self.state.merge(parts, diffs=self.on_diff is not None)
            self._apply(res, now)
            self.counters["transfers_merged"] += 1
            out = self._outstanding.get(sender)
            if out is not None and out[0] == msg.req_id:
                del self._outstanding[sender]
            self._satisfied.add(sender)
            for o, (_, p) in list(self._want.items()):
                if p == sender:
                    del self._want[o]
        return []

    def _ack_frames(self, to: Rid, req_id: int, parts: builtins.list[Part]) -> builtins.list[bytes]:
        limit = self.config.chunk_entries
        chunks: builtins.list[builtins.list[Part]] = [[]]
        size = 0
        for p in parts:
            if type(p) is SlicePart and len(p.entries) > limit:
                ents = p.entries
                for i in range(0, len(ents), limit):
                    piece = SlicePart(p.origin, p.counter, ents[i : i + limit])
                    if size and size + len(piece.entries) > limit:
                        chunks.append([])
                        size = 0
                    chunks[-1].append(piece)
                    size += len(piece.entries) + 1
                continue
            n = 1 + (len(p.events) if type(p) is DeltaPart else len(p.entries))  # type: ignore[union-attr]
            if size and size + n > limit:
                chunks.append([])
                size = 0
            chunks[-1].append(p)
            size += n
        total = len(chunks)
        return [wire.encode_ack(self.rid, to, req_id, c, i, total) for i, c in enumerate(chunks)]

    # ---------------------------------------------------------------- tick

    def flush(self) -> builtins.list[Out]:
        """Broadcast pending local changes now (split into several frames if large)."""
        part = self.state.take_delta()
        self._flush_at = None
        if part is None:
            return []
        self._last_flush = self._now
        limit = self.config.chunk_entries
        outs: builtins.list[Out] = []
        events = part.events
        start = part.start
        for i in range(0, len(events), limit):
            evs = events[i : i + limit]
            end = part.end if i + limit >= len(events) else evs[-1].n
            outs.append(
                Out(None, wire.encode_delta(self.rid, [DeltaPart(self.rid, start, end, evs)]))
            )
            start = end
        self.counters["deltas_sent"] += len(outs)
        return outs

    def tick(self, now: float) -> builtins.list[Out]:
        """Run timers: delta flush, heartbeat, down/purge detection, transfers, readiness."""
        self._now = max(self._now, now)
        if self._stopped:
            return []
        out: builtins.list[Out] = []
        if self.state.has_delta():
            if self._flush_at is None:
                # leading edge: a change after a quiet period goes out at once; the
                # changes that follow within batch_s wait for the end of that window
                self._flush_at = max(now, self._last_flush + self.config.batch_s)
            if now >= self._flush_at:
                out += self.flush()
        if now >= self._next_hb:
            out += self.flush()
            out.append(Out(None, wire.encode_heartbeat(self.rid, self.state.clock())))
            self.counters["heartbeats_sent"] += 1
            hb = self.config.heartbeat_s
            self._next_hb = now + hb * (0.9 + 0.2 * self._rng.random())
        self._detect_downs(now)
        for key, deadline in list(self._chunk_deadline.items()):
            if deadline <= now:
                self._chunks.pop(key, None)
                del self._chunk_deadline[key]
                self.dropped["incomplete_transfer"] += 1
        out += self._maybe_request(now)
        self._update_synced(now)
        return out

    def _detect_downs(self, now: float) -> None:
        cfg = self.config
        for rid, peer in list(self._peers.items()):
            silence = now - peer.last_seen
            if silence >= cfg.purge_s:
                self.counters["replica_purges"] += 1
                self._apply(self.state.purge(rid), now)
                self._forget_peer(rid)
            elif silence >= cfg.down_s and peer.status == "up":
                peer.status = "down"
                self.counters["replica_downs"] += 1
                self._apply(self.state.replica_down(rid), now)
                self._outstanding.pop(rid, None)

    def _maybe_request(self, now: float) -> builtins.list[Out]:
        for rid, (_, deadline) in list(self._outstanding.items()):
            if deadline <= now:
                del self._outstanding[rid]
                self.counters["transfer_timeouts"] += 1
                for o, (_, p) in list(self._want.items()):
                    if p == rid:
                        del self._want[o]
        need = {
            o: t
            for o, (t, _) in self._want.items()
            if not self.state.is_purged(o) and self.state.counter(o) < t
        }
        self._want = {o: w for o, w in self._want.items() if o in need}
        if not need or self._outstanding:
            return []  # at most one transfer in flight: no storms
        best: tuple[int, int, str, Rid] | None = None
        for rid, peer in self._peers.items():
            if peer.status != "up" or not peer.direct:
                continue
            covered = sum(1 for o, t in need.items() if peer.clock.get(o, 0) >= t)
            if covered == 0:
                continue
            own = 1 if rid in need else 0
            cand = (covered, own, rid[0], rid)
            if best is None or cand[:2] > best[:2] or (cand[:2] == best[:2] and cand[2] < best[2]):
                best = cand
        if best is None:
            return []
        target = best[3]
        self._req_seq += 1
        self._outstanding[target] = (self._req_seq, now + self.config.transfer_timeout)
        self.counters["transfers_requested"] += 1
        frame = wire.encode_request(self.rid, target, self._req_seq, self.state.clock())
        return [Out(target[0], frame)]

    def _update_synced(self, now: float) -> None:
        if self._synced:
            return
        elapsed = now - self._started
        heard = [p for p in self._peers.values() if p.direct and p.status == "up"]
        if not heard:
            if elapsed >= self.config.sync_wait:
                self._synced = True
            return
        if elapsed < min(self.config.heartbeat_s, self.config.sync_wait):
            return
        for peer in heard:
            if peer.rid in self._satisfied:
                continue
            base = self._baseline.get(peer.rid)
            if base is None:
                return
            for o, n in base.items():
                if o == self.rid or self.state.is_purged(o):
                    continue
                if self.state.counter(o) < n:
                    return
            self._satisfied.add(peer.rid)
        self._synced = True

    # ---------------------------------------------------------------- stop

    def leave(self) -> builtins.list[Out]:
        """Graceful shutdown: flush pending changes and tell peers to purge us now."""
        if self._stopped:
            return []
        out = self.flush()
        out.append(Out(None, wire.encode_leave(self.rid)))
        self._stopped = True
        return out


def _join_chunks(chunks: list[list[Part]]) -> list[Part]:
    """Re-assemble slices that a transfer split across several frames."""
    out: list[Part] = []
    pieces: list[tuple[tuple[str, str, Any], ...]] = []  # of the slice at out[-1]

    def close() -> None:
        if len(pieces) > 1:
            last: SlicePart = out[-1]  # type: ignore[assignment]
            out[-1] = SlicePart(last.origin, last.counter, tuple(chain.from_iterable(pieces)))
        pieces.clear()

    for parts in chunks:
        for p in parts:
            if type(p) is SlicePart:
                prev = out[-1] if pieces else None
                if prev is not None and prev.origin == p.origin and prev.counter == p.counter:  # type: ignore[union-attr]
                    pieces.append(p.entries)
                    continue
                close()
                out.append(p)
                pieces.append(p.entries)
            else:
                close()
                out.append(p)
    close()
    return out
