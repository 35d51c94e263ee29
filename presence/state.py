"""Pure presence state: a delta-state CRDT of presence entries.

No I/O, no clock reads, no randomness. See ``docs/presence.md`` for the design.

Data model
----------
* A replica is identified by ``Rid = (name, incarnation)``.
* An entry is identified by ``(key, origin, conn)``: ``key`` is the user id,
  ``origin`` the replica that tracks it, ``conn`` the connection id. Only the
  origin replica ever creates, updates or removes its entries.
* Every local operation (track, update, untrack) consumes the next *dot*
  ``(origin, n)`` of the origin's counter. The causal context of a state is a
  version vector ``{origin: n}`` meaning "every event of ``origin`` up to ``n``
  has been applied".
* Two kinds of *parts* move between replicas:

  - :class:`DeltaPart` ``(origin, start, end, events)``: the events of ``origin``
    with dots in ``(start, end]`` (compacted to the last event per entry). It is
    merged only if it *connects*: ``start <= have``; events with ``n <= have``
    are skipped. A part that does not connect is refused and reported as a
    :class:`Gap` (the replica then asks a peer for a transfer).
  - :class:`SlicePart` ``(origin, counter, entries)``: every live entry of
    ``origin`` as of ``counter``. It replaces the local slice if and only if
    ``counter > have`` (observed-remove: an entry of the origin that is absent
    from a newer slice has been removed).

  Per origin the state is therefore a max-semilattice ordered by the counter,
  which makes merge commutative, associative and idempotent, makes a stale or
  duplicated part a no-op (a leave is never undone) and makes add-wins trivial
  (a re-track is a new dot, a later untrack names the entry, not a dot range).
"""

from __future__ import annotations

import builtins
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple, cast

__all__ = [
    "EMPTY_META",
    "DeltaPart",
    "Event",
    "Gap",
    "GapError",
    "MergeResult",
    "Part",
    "Presence",
    "Rid",
    "SlicePart",
    "State",
]

Rid = tuple[str, int]
"""Replica identity: ``(name, incarnation)``."""

Meta = Mapping[str, Any]

EMPTY_META: Meta = MappingProxyType({})


class Presence(NamedTuple):
    """One tracked connection, as returned by ``list``.

    ``node`` is the name of the replica that tracks it (without incarnation),
    ``origin`` is its full identity ``(node, incarnation)``. Treat ``meta`` as
    read-only: it is shared with the state.
    """

    key: str
    conn: str
    node: str
    meta: Meta
    origin: Rid


class Event(NamedTuple):
    """One event of an origin: ``meta is None`` means "untracked"."""

    n: int
    key: str
    conn: str
    meta: Meta | None


class DeltaPart(NamedTuple):
    origin: Rid
    start: int
    end: int
    events: tuple[Event, ...]


class SlicePart(NamedTuple):
    origin: Rid
    counter: int
    entries: tuple[tuple[str, str, Meta], ...]


Part = DeltaPart | SlicePart


class Gap(NamedTuple):
    """A delta part of ``origin`` starting after ``start`` while we have ``have``."""

    origin: Rid
    have: int
    start: int
    end: int


class GapError(Exception):
    def __init__(self, gaps: list[Gap]) -> None:
        super().__init__(f"delta does not connect: {gaps!r}")
        self.gaps = gaps


@dataclass(slots=True)
class MergeResult:
    """What a merge (or up/down/purge) changed in the *visible* list."""

    joins: list[Presence] = field(default_factory=list)
    leaves: list[Presence] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    #: origins this state had never seen before the merge
    new_origins: list[Rid] = field(default_factory=list)
    #: origins purged because a newer incarnation of the same name appeared
    superseded: list[Rid] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.joins or self.leaves or self.gaps or self.new_origins or self.superseded)

    def extend(self, other: MergeResult) -> None:
        self.joins += other.joins
        self.leaves += other.leaves
        self.gaps += other.gaps
        self.new_origins += other.new_origins
        self.superseded += other.superseded


_new_presence = tuple.__new__


def _multi(v: Presence | tuple[Presence, ...]) -> tuple[Presence, ...]:
    return cast("tuple[Presence, ...]", v)


class _Log:
    """Recent events of one origin covering dots ``(base, end]``."""

    __slots__ = ("base", "events")

    def __init__(self, base: int) -> None:
        self.base = base
        self.events: deque[Event] = deque()


def _compact(events: Iterable[Event]) -> tuple[Event, ...]:
    """Keep the last event per ``(key, conn)``, in dot order."""
    last: dict[tuple[str, str], Event] = {}
    for ev in events:
        k = (ev.key, ev.conn)
        last.pop(k, None)  # re-insert so dict order stays dot order
        last[k] = ev
    return tuple(last.values())


class State:
    """The presence set of one replica. Not thread-safe for writers.

    Readers of :meth:`list` on other threads are safe without a lock: the per-key
    values are immutable tuples swapped atomically and the down set is a frozenset.
    """

    __slots__ = (
        "_by_key",
        "_ctx",
        "_down",
        "_logs",
        "_max_inc",
        "_origin_keys",
        "_own_conns",
        "_pending",
        "_pending_start",
        "_purged",
        "_size",
        "log_size",
        "replica",
    )

    def __init__(self, replica: Rid, *, log_size: int = 4096) -> None:
        self.replica: Rid = (str(replica[0]), int(replica[1]))
        self.log_size = log_size
        self._ctx: dict[Rid, int] = {self.replica: 0}
        self._by_key: dict[str, Presence | tuple[Presence, ...]] = {}
        # per origin, the keys it has entries under (a dict used as a compact ordered set)
        self._origin_keys: dict[Rid, dict[str, None]] = {}
        self._own_conns: dict[str, set[str]] = {}
        self._down: frozenset[Rid] = frozenset()
        self._purged: set[Rid] = set()
        self._max_inc: dict[str, int] = {self.replica[0]: self.replica[1]}
        self._logs: dict[Rid, _Log] = {self.replica: _Log(0)}
        self._pending: builtins.list[Event] = []
        self._pending_start = 0
        self._size = 0

    # ------------------------------------------------------------------ reads

    def __len__(self) -> int:
        """Number of stored entries (visible or hidden)."""
        return self._size

    def list(self, key: str) -> builtins.list[Presence]:
        """Visible entries of ``key`` (entries of down replicas are hidden)."""
        v = self._by_key.get(key)
        if v is None:
            return []
        down = self._down
        if type(v) is Presence:
            if down and v.origin in down:
                return []
            return [v]
        if down:
            return [p for p in _multi(v) if p.origin not in down]
        return list(_multi(v))

    def list_all(self) -> builtins.list[Presence]:
        """Every visible entry."""
        return list(self._iter_visible())

    def _iter_visible(self) -> Iterator[Presence]:
        down = self._down
        for v in list(self._by_key.values()):
            if type(v) is Presence:
                if not (down and v.origin in down):
                    yield v
            else:
                for p in _multi(v):
                    if not (down and p.origin in down):
                        yield p

    def entries_of(self, origin: Rid) -> builtins.list[Presence]:
        """Every stored entry of ``origin`` (even if the origin is down)."""
        out: builtins.list[Presence] = []
        for key in self._origin_keys.get(origin, ()):
            v = self._by_key.get(key)
            if v is None:
                continue
            if type(v) is Presence:
                if v.origin == origin:
                    out.append(v)
            else:
                out.extend(p for p in _multi(v) if p.origin == origin)
        return out

    def get(self, key: str, conn: str, origin: Rid | None = None) -> Presence | None:
        """The stored entry ``(key, origin, conn)`` (own replica by default)."""
        origin = self.replica if origin is None else origin
        v = self._by_key.get(key)
        if v is None:
            return None
        for p in (v,) if type(v) is Presence else _multi(v):
            if p.conn == conn and p.origin == origin:
                return p
        return None

    def clock(self) -> dict[Rid, int]:
        """The causal context: ``{origin: counter}`` of every known, not purged origin."""
        return dict(self._ctx)

    def counter(self, origin: Rid) -> int:
        return self._ctx.get(origin, 0)

    def origins(self) -> builtins.list[Rid]:
        return list(self._ctx)

    @property
    def down(self) -> frozenset[Rid]:
        return self._down

    @property
    def purged(self) -> frozenset[Rid]:
        return frozenset(self._purged)

    def is_purged(self, origin: Rid) -> bool:
        if origin in self._purged:
            return True
        known = self._max_inc.get(origin[0])
        return known is not None and origin[1] < known

    def origin_size(self, origin: Rid) -> int:
        return len(self.entries_of(origin))

    # --------------------------------------------------------- storage helpers

    def _put(self, p: Presence) -> Presence | None:
        key = p.key
        cur = self._by_key.get(key)
        if cur is None:
            self._by_key[key] = p
            old = None
        elif type(cur) is Presence:
            if cur.conn == p.conn and cur.origin == p.origin:
                self._by_key[key] = p
                return cur
            self._by_key[key] = (cur, p)
            old = None
        else:
            tup = _multi(cur)
            for i, q in enumerate(tup):
                if q.conn == p.conn and q.origin == p.origin:
                    self._by_key[key] = (*tup[:i], p, *tup[i + 1 :])
                    return q
            self._by_key[key] = (*tup, p)
            old = None
        self._size += 1
        ks = self._origin_keys.get(p.origin)
        if ks is None:
            self._origin_keys[p.origin] = {key: None}
        else:
            ks[key] = None
        return old

    def _del(self, key: str, conn: str, origin: Rid) -> Presence | None:
        cur = self._by_key.get(key)
        if cur is None:
            return None
        old: Presence | None = None
        still_has_origin = False
        if type(cur) is Presence:
            if cur.conn == conn and cur.origin == origin:
                del self._by_key[key]
                old = cur
        else:
            keep: builtins.list[Presence] = []
            for q in _multi(cur):
                if old is None and q.conn == conn and q.origin == origin:
                    old = q
                else:
                    keep.append(q)
                    if q.origin == origin:
                        still_has_origin = True
            if old is not None:
                if len(keep) == 1:
                    self._by_key[key] = keep[0]
                else:
                    self._by_key[key] = tuple(keep)
        if old is None:
            return None
        self._size -= 1
        if not still_has_origin:
            ks = self._origin_keys.get(origin)
            if ks is not None:
                ks.pop(key, None)
                if not ks:
                    del self._origin_keys[origin]
        return old

    def _log(self, origin: Rid, ev: Event) -> None:
        log = self._logs.get(origin)
        if log is None:
            return
        log.events.append(ev)
        if len(log.events) > self.log_size:
            log.base = log.events.popleft().n

    # ------------------------------------------------------- local operations

    def _bump(self, key: str, conn: str, meta: Meta | None) -> Event:
        me = self.replica
        n = self._ctx[me] + 1
        self._ctx[me] = n
        ev = Event(n, key, conn, meta)
        self._pending.append(ev)
        self._log(me, ev)
        return ev

    def track(self, key: str, conn: str, meta: Meta | None = None) -> Presence:
        """Track ``conn`` of ``key`` on this replica (an existing entry is updated).

        Tracking an entry that already exists with an equal meta is a no-op.
        """
        m: Meta = meta if meta else EMPTY_META
        me = self.replica
        cur = self.get(key, conn)
        if cur is not None and cur.meta == m:
            return cur
        self._bump(key, conn, m)
        p: Presence = _new_presence(Presence, (key, conn, me[0], m, me))
        self._put(p)
        keys = self._own_conns.get(conn)
        if keys is None:
            self._own_conns[conn] = {key}
        else:
            keys.add(key)
        return p

    def update(self, key: str, conn: str, meta: Meta | None) -> Presence | None:
        """Replace the meta of a tracked entry; ``None`` if it is not tracked."""
        if self.get(key, conn) is None:
            return None
        return self.track(key, conn, meta)

    def untrack(self, key: str, conn: str) -> Presence | None:
        """Untrack one entry; returns it, or ``None`` (no-op) if it was not tracked."""
        old = self._del(key, conn, self.replica)
        if old is None:
            return None
        self._bump(key, conn, None)
        keys = self._own_conns.get(conn)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._own_conns[conn]
        return old

    def untrack_conn(self, conn: str) -> builtins.list[Presence]:
        """Untrack every entry of ``conn`` on this replica."""
        out: builtins.list[Presence] = []
        for key in sorted(self._own_conns.get(conn, ())):
            p = self.untrack(key, conn)
            if p is not None:
                out.append(p)
        return out

    def has_delta(self) -> bool:
        return bool(self._pending)

    def take_delta(self) -> DeltaPart | None:
        """The pending delta of local operations since the last call (or None)."""
        if not self._pending:
            return None
        me = self.replica
        part = DeltaPart(me, self._pending_start, self._ctx[me], _compact(self._pending))
        self._pending = []
        self._pending_start = self._ctx[me]
        return part

    # ----------------------------------------------------------------- merges

    def _admit(self, origin: Rid, res: MergeResult) -> bool:
        """May parts of ``origin`` be merged? Purges superseded incarnations."""
        if origin == self.replica or origin in self._purged:
            return False
        name, inc = origin
        if name == self.replica[0]:
            # an older life of ourselves (purged) or a newer one (we are stale)
            if inc < self.replica[1]:
                self._purged.add(origin)
            return False
        known = self._max_inc.get(name)
        if known is None:
            self._max_inc[name] = inc
        elif inc < known:
            self._purged.add(origin)
            return False
        elif inc > known:
            old = (name, known)
            if old in self._ctx or old in self._origin_keys:
                res.leaves += self.purge(old).leaves
                res.superseded.append(old)
            else:
                self._purged.add(old)
            self._max_inc[name] = inc
        if origin not in self._ctx:
            self._ctx[origin] = 0
            self._logs[origin] = _Log(0)
            res.new_origins.append(origin)
        return True

    def see(self, origin: Rid) -> MergeResult:
        """Register an origin heard of (e.g. by heartbeat) with an empty context."""
        res = MergeResult()
        self._admit(origin, res)
        return res

    def merge(self, parts: Iterable[Part]) -> MergeResult:
        """Merge delta and slice parts; non-connecting delta parts go to ``gaps``."""
        res = MergeResult()
        for part in parts:
            if type(part) is DeltaPart:
                self._merge_delta_part(part, res)
            else:
                self._merge_slice(part, res)  # type: ignore[arg-type]
        return res

    def merge_delta(self, parts: Iterable[Part]) -> MergeResult:
        """Like :meth:`merge` but raises :class:`GapError` if any part has a gap.

        Parts that do connect are merged before the exception is raised.
        """
        res = self.merge(parts)
        if res.gaps:
            raise GapError(res.gaps)
        return res

    def merge_state(self, parts: Iterable[Part]) -> MergeResult:
        """Merge a whole state (as produced by :meth:`extract` with an empty clock)."""
        return self.merge(parts)

    def _merge_delta_part(self, part: DeltaPart, res: MergeResult) -> None:
        origin = part.origin
        have = self._ctx.get(origin, 0)
        if part.end <= have and origin in self._ctx:
            return
        if not self._admit(origin, res):
            return
        if part.end <= have:
            return
        if part.start > have:
            res.gaps.append(Gap(origin, have, part.start, part.end))
            return
        visible = origin not in self._down
        name = origin[0]
        log = self._logs.get(origin)
        for ev in part.events:
            if ev.n <= have:
                continue
            if ev.meta is None:
                old = self._del(ev.key, ev.conn, origin)
                if old is not None and visible:
                    res.leaves.append(old)
            else:
                p: Presence = _new_presence(Presence, (ev.key, ev.conn, name, ev.meta, origin))
                old = self._put(p)
                if visible:
                    if old is not None:
                        res.leaves.append(old)
                    res.joins.append(p)
        self._ctx[origin] = part.end
        if log is not None:
            evs = part.events
            if len(evs) >= self.log_size:
                # the log keeps only the newest events: rebuild it from the part
                keep = evs[len(evs) - self.log_size :] if self.log_size else ()
                log.events = deque(keep)
                log.base = evs[len(evs) - len(keep) - 1].n if len(keep) < len(evs) else have
                if log.base < have:
                    log.base = have
            else:
                log.events.extend(e for e in evs if e.n > have)
                while len(log.events) > self.log_size:
                    log.base = log.events.popleft().n

    def _merge_slice(self, part: SlicePart, res: MergeResult) -> None:
        origin = part.origin
        if origin in self._ctx and part.counter <= self._ctx[origin]:
            return
        if not self._admit(origin, res):
            return
        have = self._ctx[origin]
        if part.counter <= have:
            return
        visible = origin not in self._down
        name = origin[0]
        old_map = {(p.key, p.conn): p for p in self.entries_of(origin)}
        for key, conn, meta in part.entries:
            old = old_map.pop((key, conn), None)
            if old is not None and old.meta == meta:
                continue
            p: Presence = _new_presence(Presence, (key, conn, name, meta, origin))
            self._put(p)
            if visible:
                if old is not None:
                    res.leaves.append(old)
                res.joins.append(p)
        for (key, conn), old in old_map.items():
            self._del(key, conn, origin)
            if visible:
                res.leaves.append(old)
        self._ctx[origin] = part.counter
        self._logs[origin] = _Log(part.counter)

    # ----------------------------------------------------------- extraction

    def extract(
        self,
        remote_clock: Mapping[Rid, int],
        exclude: Rid | None = None,
        *,
        prefer_delta: bool = True,
    ) -> builtins.list[Part]:
        """The parts a replica with ``remote_clock`` needs to catch up with us.

        Only origins on which the remote lags are included. For each, the
        smallest sufficient form is chosen: a delta from the recent-event log
        when it covers the remote's counter and is smaller than the slice,
        otherwise the whole slice of that origin. ``extract({})`` is the whole
        state. ``exclude`` (the requester itself) is never sent back.
        """
        parts: builtins.list[Part] = []
        for origin, n in list(self._ctx.items()):
            if origin == exclude:
                continue
            rc = remote_clock.get(origin, 0)
            if n <= rc:
                if n == 0 and origin not in remote_clock and origin != exclude:
                    # announce an origin the remote never heard of
                    parts.append(SlicePart(origin, 0, ()))
                continue
            entries = self.entries_of(origin)
            if prefer_delta and rc > 0:
                log = self._logs.get(origin)
                if log is not None and log.base <= rc:
                    events = _compact(e for e in log.events if e.n > rc)
                    if len(events) <= len(entries):
                        parts.append(DeltaPart(origin, rc, n, events))
                        continue
            parts.append(SlicePart(origin, n, tuple((p.key, p.conn, p.meta) for p in entries)))
        return parts

    # --------------------------------------------------------- replica status

    def replica_down(self, origin: Rid) -> MergeResult:
        """Hide the entries of ``origin``; returns them as leaves."""
        res = MergeResult()
        if origin == self.replica or origin in self._down:
            return res
        self._down = self._down | {origin}
        res.leaves = self.entries_of(origin)
        return res

    def replica_up(self, origin: Rid) -> MergeResult:
        """Show the entries of ``origin`` again; returns them as joins."""
        res = MergeResult()
        if origin not in self._down:
            return res
        self._down = self._down - {origin}
        res.joins = self.entries_of(origin)
        return res

    def unpurge(self, origin: Rid) -> bool:
        """Allow a purged origin back (it was heard directly again, so it is alive).

        Refused for superseded incarnations. Its entries must then be transferred
        again: nothing of the old slice is kept.
        """
        if origin not in self._purged or self._max_inc.get(origin[0], -1) > origin[1]:
            return False
        self._purged.discard(origin)
        return True

    def purge(self, origin: Rid) -> MergeResult:
        """Permanently forget ``origin``: its entries go and never come back."""
        res = MergeResult()
        if origin == self.replica:
            return res
        was_visible = origin not in self._down
        for p in self.entries_of(origin):
            self._del(p.key, p.conn, origin)
            if was_visible:
                res.leaves.append(p)
        self._ctx.pop(origin, None)
        self._logs.pop(origin, None)
        self._origin_keys.pop(origin, None)
        if origin in self._down:
            self._down = self._down - {origin}
        self._purged.add(origin)
        name, inc = origin
        if self._max_inc.get(name, -1) < inc:
            self._max_inc[name] = inc
        return res

    # ------------------------------------------------------------- debugging

    def snapshot(self) -> dict[Rid, dict[tuple[str, str], Meta]]:
        """Every stored entry, grouped by origin (for tests and debugging)."""
        out: dict[Rid, dict[tuple[str, str], Meta]] = {}
        for origin in self._ctx:
            ents = self.entries_of(origin)
            out[origin] = {(p.key, p.conn): p.meta for p in ents}
        return out
